"""``edge-runtime export`` and ``edge-runtime inspect`` subcommands (wired in edge_cli/main.py).

``inspect`` imports nothing from torch; ``export`` imports the exporters lazily.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

_RAW = argparse.RawDescriptionHelpFormatter


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export SPEC --input-shape ... --calib ... --out ...``; sets ``func``."""
    p = subparsers.add_parser(
        "export", help="export a PyTorch model to a bundle", formatter_class=_RAW,
        epilog="examples:\n"
               "  edge-runtime export mypkg.models:make_model --input-shape 1,3,224,224 --calib images/ "
               "--out bundle \\\n      --labels ok,defect --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225\n"
               "  edge-runtime export model.pt2 --input-shape 1,3,32,32 --calib calib.npy --out bundle "
               "--formats onnx\n\n"
               "package.module:factory is imported as `python -m` would, from the current directory first.")
    p.add_argument("spec", help="model.pt2 (torch.export.save), TorchScript .pt, or package.module:factory "
                                "(a function taking no arguments that returns the nn.Module)")
    p.add_argument("--input-shape", required=True, help="e.g. 1,3,224,224 (NCHW)")
    p.add_argument("--calib", help="calibration inputs: image directory (ImageFolder) or .npy (N, ...)")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--labels", help="comma-separated class names or a text file, one a line")
    p.add_argument("--mean", help="per-channel mean subtracted from pixels scaled to 0..1, comma-separated "
                                  "(e.g. 0.485,0.456,0.406)")
    p.add_argument("--std", help="per-channel std dividing pixels scaled to 0..1 after the mean, "
                                 "comma-separated (e.g. 0.229,0.224,0.225)")
    p.add_argument("--channel-order", default="RGB", choices=["RGB", "BGR", "L"],
                   help="channel order the model expects: RGB, BGR or L (grayscale) (default RGB)")
    p.add_argument("--formats", default="onnx,tflite",
                   help="onnx,tflite; suffix '?' = if possible, e.g. onnx,tflite?")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out bundle directory")
    p.add_argument("--target-sparsity", type=float, metavar="FRACTION",
                   help="fit activation thresholds for this fraction of zeros (e.g. 0.9) "
                        "on --calib and export the thresholded model")
    p.add_argument("--max-accuracy-drop", type=float, default=0.5, metavar="POINTS",
                   help="allowed top-1 agreement drop in percentage points (default 0.5)")
    p.add_argument("--per-channel-thresholds", action="store_true",
                   help="one threshold per channel instead of per layer")
    p.add_argument("--sign-key", metavar="KEY",
                   help="Ed25519 private key ('edge-runtime keys generate') to sign the manifest "
                        "(writes manifest.sig; devices pin the .pub with --trusted-key)")
    p.add_argument("--quantize", choices=("int8",),
                   help="also write model.int8.onnx: onnxruntime's static quantizer (QDQ, per-channel int8 "
                        "weights) calibrated on --calib, with its own golden outputs, and with the tflite format "
                        "model.int8.tflite (ai-edge-quantizer, the litert-int8 backend; docs/int8.md)")
    _add_task_flags(p)
    p.set_defaults(func=run_export)
    return p


def _add_task_flags(p: argparse.ArgumentParser) -> None:
    """--task and the main postprocess settings (docs/tasks.md)."""
    g = p.add_argument_group("task (docs/tasks.md)")
    g.add_argument("--task", choices=("classification", "detection", "segmentation", "anomaly"),
                   help="what the outputs mean (default: inferred from the output shapes where unambiguous)")
    g.add_argument("--classes", help="comma-separated class names of a detector/segmenter (default: --labels)")
    g.add_argument("--layout", choices=("yolo", "yolo_obj", "ssd"),
                   help="detection output layout: yolo (B, 4+C, N), yolo_obj (B, N, 5+C), ssd (boxes + scores)")
    g.add_argument("--box-format", choices=("cxcywh", "xyxy"), help="detection box format (default cxcywh)")
    g.add_argument("--score-threshold", type=float, help="detection: keep boxes scoring above this (default 0.25)")
    g.add_argument("--iou-threshold", type=float, help="detection: NMS IoU threshold (default 0.45)")
    g.add_argument("--max-detections", type=int, help="detection: most boxes per image (default 100)")
    g.add_argument("--threshold", type=float, help="segmentation probability map: defect when above (default 0.5)")
    g.add_argument("--target-fpr", type=float, help="anomaly: false-positive rate on the --calib good parts "
                                                    "at which the threshold is fitted (default 0.01)")
    g.add_argument("--postprocess", help="JSON object (or a .json file) of postprocess keys (docs/bundle.md); "
                                         "the flags above override it")


def task_options(args: argparse.Namespace) -> tuple[str | None, dict[str, Any] | None]:
    """(task, postprocess) from the export flags; None postprocess when nothing was given."""
    post: dict[str, Any] = {}
    if args.postprocess:
        from edge_runtime.validation.commands import _json_arg

        try:
            post = _json_arg(args.postprocess)
        except argparse.ArgumentTypeError as exc:
            from edge_runtime.errors import InvalidArgumentError

            raise InvalidArgumentError(f"--postprocess: {exc}") from exc
    flags = {"classes": args.classes.split(",") if args.classes else None, "layout": args.layout,
             "box_format": args.box_format, "score_threshold": args.score_threshold,
             "iou_threshold": args.iou_threshold, "max_detections": args.max_detections,
             "threshold": args.threshold, "target_fpr": args.target_fpr}
    post.update({k: v for k, v in flags.items() if v is not None})
    return args.task, post or None


def add_inspect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``inspect BUNDLE_OR_MODEL [--json]``; sets ``func``."""
    p = subparsers.add_parser("inspect", help="describe a bundle or an .onnx file", formatter_class=_RAW,
                              epilog="examples:\n  edge-runtime inspect bundle/\n"
                                     "  edge-runtime inspect model.onnx --json")
    p.add_argument("path", help="a bundle directory or an .onnx file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run_inspect)
    return p


def _floats(text: str | None, flag: str) -> list[float] | None:
    from edge_runtime.errors import InvalidArgumentError

    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InvalidArgumentError(f"{flag} {text!r}: expected comma-separated numbers on the 0..1 pixel "
                                   f"scale, e.g. {flag} 0.5,0.5,0.5.") from exc


def importable_spec(spec: str) -> None:
    """Make ``package.module:factory`` importable as ``python -m`` would: the current directory first.

    The ``edge-runtime`` console script's ``sys.path`` starts with its own bin directory, not
    the current one, so ``mypkg/`` next to the user was not found.

    Raises:
        InvalidArgumentError: the module cannot be found; the message says how to make it importable.
    """
    from edge_runtime.errors import InvalidArgumentError

    if ":" not in spec or Path(spec).exists():
        return
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    module = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package is missing or broken
        found = None
    if found is None:
        top = module.split(".")[0]
        raise InvalidArgumentError(
            f"model spec {spec!r}: module {module!r} is not importable from {cwd} or sys.path. Run the command "
            f"in the folder that contains {top}/ (or {top}.py), or set PYTHONPATH to that folder, e.g. "
            f"PYTHONPATH=/path/to/project edge-runtime export {spec} ...")


def run_export(args: argparse.Namespace) -> int:
    """Run ``export``; prints the bundle path and returns 0."""
    from edge_runtime.errors import InvalidArgumentError

    importable_spec(args.spec)
    out = Path(args.out).expanduser()
    if not out.parent.is_dir():
        raise InvalidArgumentError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist; create "
                                   f"it first or choose another path.")
    if out.exists() and not args.overwrite:
        raise InvalidArgumentError(f"--out {str(out)!r} already exists; pass --overwrite to replace it or choose "
                                   f"another directory.")
    if args.quantize and not args.calib:
        raise InvalidArgumentError(f"--quantize {args.quantize} calibrates the quantizer on real inputs; pass --calib "
                                   f"(an image directory or .npy), or drop --quantize.")
    if args.quantize:  # a missing quantizer fails before the model and the images are loaded
        from exporters.int8_bundle import check_quantize

        check_quantize(args.quantize, {f.rstrip("?"): not f.endswith("?") for f in args.formats.split(",")})
    try:
        shape = [int(v) for v in args.input_shape.split(",")]
    except ValueError as exc:
        raise InvalidArgumentError(f"--input-shape {args.input_shape!r}: expected comma-"
                                   "separated ints such as 1,3,224,224.") from exc
    import torch

    from exporters import export, load_model

    task, post = task_options(args)
    labels = None
    if args.labels:
        path = Path(args.labels)
        labels = path.read_text().split() if path.is_file() else args.labels.split(",")
    pre = None
    if len(shape) == 4:
        pre = {"input_size": shape[2:], "mean": _floats(args.mean, "--mean"), "std": _floats(args.std, "--std"),
               "channel_order": args.channel_order, "layout": "NCHW"}
    bundle = export(load_model(args.spec), torch.randn(*shape), args.out,
                    calibration=args.calib, formats=args.formats.split(","),
                    labels=labels, preprocessing=pre, overwrite=args.overwrite,
                    target_sparsity=args.target_sparsity,
                    max_accuracy_drop=args.max_accuracy_drop,
                    per_channel_thresholds=args.per_channel_thresholds, sign_key=args.sign_key,
                    task=task, postprocess=post, quantize=args.quantize)
    print(f"wrote {bundle.path} ({', '.join(sorted(bundle.manifest['files']))}); task {bundle.spec.task}")
    _report_task(bundle.manifest)
    int8 = bundle.manifest.get("int8")
    if int8:
        print(f"int8: {int8['model']} ({int8['annotated_layers']} annotated layers, {int8['calibration_samples']} "
              f"calibration samples); int8 backends are checked against {int8['golden']} at atol "
              f"{int8['golden_atol']:g}")
        tfl = int8.get("tflite")
        if tfl:
            print(f"int8 TFLite: {tfl['model']} ({tfl['quantizer']}, {tfl['calibration_samples']} calibration "
                  f"samples, max abs vs fp32 {tfl['max_abs_vs_fp32']:g}); litert-int8 is checked against "
                  f"{tfl['golden']} at atol {tfl['golden_atol']:g}")
    fit = (bundle.manifest.get("sparsity") or {}).get("thresholds")
    if fit:
        chosen = sum(a["threshold"] is not None for a in fit["activations"].values())
        print(f"thresholds on {chosen}/{len(fit['activations'])} activations: {fit['metric']} "
              f"{fit['metric_before']:.2f} -> {fit['metric_after']:.2f}, "
              f"{len(fit['backoffs'])} back-offs")
        _report_shortfall(fit)
    return 0


def _report_task(manifest: dict[str, Any]) -> None:
    """Print the fitted anomaly threshold (what the device will decide on)."""
    post = manifest.get("postprocess") or {}
    if manifest.get("task") == "anomaly" and post.get("measured_fpr") is not None:
        print(f"anomaly threshold {post['threshold']:.4f} (normalised score) fitted on {post['calibration_images']} "
              f"good image(s): false-positive rate {post['measured_fpr']:.4f} (target {post['target_fpr']:g})")


def _report_shortfall(fit: dict[str, Any]) -> None:
    """Say when the thresholded activations reached less sparsity than --target-sparsity asked."""
    target = fit.get("target_sparsity")
    reached = [a["sparsity_after"] for a in fit["activations"].values() if a["threshold"] is not None]
    if target is None or not reached:
        return
    low = min(reached)
    if low < target - 0.01:
        print(f"note: --target-sparsity {target:g} asked for {100 * target:.0f}% zeros; the thresholded "
              f"activations reached {100 * low:.0f}-{100 * max(reached):.0f}% on --calib "
              f"({len(fit['backoffs'])} back-offs kept top-1 within --max-accuracy-drop "
              f"{fit['max_accuracy_drop']:g} points). Allow a larger --max-accuracy-drop, or fine-tune "
              f"the model for sparsity, to get closer.")


def run_inspect(args: argparse.Namespace) -> int:
    """Run ``inspect``; prints text or JSON; returns 1 when the bundle fails its integrity checks."""
    from edge_runtime.inspect import inspect_path, render

    info = inspect_path(args.path)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 1 if info.get("integrity") else 0
