"""CLI subcommands ``validate`` and ``run`` (wired into the command line by edge_cli/main.py).

Usage::

    edge-runtime validate BUNDLE [--data DIR|NPZ] [--backends edge,edge-dense,edge-numba,onnxruntime,litert,torch]
        [--atol X] [--max-accuracy-drop PTS] [--json FILE] [--report FILE.md] [--perturb noise,blur,...]
        [--torch-model FILE.pt2] [--reference-preprocessing JSON] [--threads N] [--overwrite] [--no-progress]
    edge-runtime run BUNDLE INPUTS... [--out results.csv|.jsonl|.json] [--batch N] [--threads N] [--device NAME]
        [--sparsity auto|off|force] [--exact-size] [--watch DIR] [--poll S] [--skip-existing] [--overwrite]
        [--annotated DIR | --masks DIR | --heatmaps DIR]

Exit status: validate 0 = every backend within tolerance, 1 = a check failed; run 0 = every
image processed, 1 = some image failed. 2 = usage or bundle error (printed by the CLI).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_runtime.trust import add_trust_flags, policy_from_args
from edge_runtime.validation.engines import ALL_BACKENDS
from edge_runtime.validation.perturb import PERTURBATIONS


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _json_arg(value: str) -> dict[str, Any]:
    import json

    try:
        text = Path(value).read_text(encoding="utf-8") if value.endswith(".json") else value
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value!r} ({exc}); pass an existing .json file or the "
                                         f"JSON text itself") from exc
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {value!r}") from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like {{\"input_size\": [32, 32], ...}}, got {value!r}")
    return parsed


def add_parsers(subparsers: Any) -> None:
    """Add ``validate`` and ``run`` to an argparse subparsers object; each sets ``func(args) -> int``."""
    val = subparsers.add_parser(
        "validate", help="check a bundle: checksums, outputs vs PyTorch, accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  edge-runtime validate bundle/\n"
               "  edge-runtime validate bundle/ --data images/ --report validation.md --json validation.json\n"
               "  edge-runtime validate bundle/ --data images/ --perturb noise,blur\n\n"
               "exit status: 0 every check passed, 1 a check failed, 2 a usage or bundle error.")
    val.add_argument("bundle", help="bundle directory")
    val.add_argument("--data", help="labelled data: ImageFolder directory (class subfolders) or NPZ with x, y; "
                                    "detection/segmentation/anomaly bundles: an NPZ with x and boxes / masks / y "
                                    "(docs/validation.md)")
    val.add_argument("--backends", type=_csv, default=None,
                     help=f"comma-separated, from {','.join(ALL_BACKENDS)} (default: every installed one "
                          f"except torch; named ones must be runnable)")
    val.add_argument("--atol", type=float, default=None, help="max abs difference to golden.npz (default 1e-3)")
    val.add_argument("--max-accuracy-drop", type=float, default=1.0,
                     help="max accuracy drop vs the reference, in percentage points (default 1); other tasks: "
                          "of mAP@0.5 / mean IoU / image AUROC")
    val.add_argument("--perturb", type=_csv, default=[],
                     help=f"accuracy (other tasks: mAP / mean IoU / AUROC) under corruptions: comma-separated from "
                          f"{','.join(PERTURBATIONS)}")
    val.add_argument("--torch-model", help="the PyTorch model (.pt2 / TorchScript) as the reference backend")
    val.add_argument("--reference-preprocessing", type=_json_arg, default=None,
                     help="JSON (or a .json file) of the preprocessing used in training, for the reference "
                          "backend on --data DIR; catches a wrong mean/std in the manifest")
    val.add_argument("--threads", type=int, default=None, help="threads per backend (default: all CPUs)")
    val.add_argument("--json", type=Path, help="write the full report to this .json file (checked before any work)")
    val.add_argument("--report", type=Path, help="write the report to this Markdown (.md) file")
    val.add_argument("--overwrite", action="store_true", help="replace existing --json/--report files")
    val.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_flags(val)
    val.set_defaults(func=cmd_validate)

    run = subparsers.add_parser(
        "run", help="run a bundle on images: labels, boxes, defect masks or anomaly scores, and latency",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  edge-runtime run bundle/ images/ --out results.csv\n"
               "  edge-runtime run bundle/ --watch /camera/out --out results.csv   # Ctrl-C stops, prints a summary\n"
               "  edge-runtime run detector/ images/ --out boxes.csv --annotated boxes/\n"
               "  edge-runtime run segmenter/ images/ --out areas.csv --masks masks/\n"
               "  edge-runtime run anomaly/ images/ --out scores.csv --heatmaps heat/\n\n"
               "exit status: 0 every image processed, 1 some image failed, 2 a usage or bundle error.")
    run.add_argument("bundle", help="bundle directory")
    run.add_argument("inputs", nargs="*", help="image files or directories (searched recursively)")
    run.add_argument("--out", type=Path, help="write results to a .csv or .jsonl file (a row appended per image) "
                                              "or .json (written at the end)")
    run.add_argument("--batch", type=int, default=1, help="images per inference call (default 1)")
    run.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the --device "
                                                               "profile's, else all CPUs)")
    run.add_argument("--device", help="device profile name or TOML (threads, dense/sparse crossovers)")
    run.add_argument("--sparsity", choices=("auto", "off", "force"), default="auto",
                     help="auto: sparse kernels where a layer's input is sparse enough (default); off: dense "
                          "kernels only; force: sparse kernels wherever one exists")
    run.add_argument("--exact-size", action="store_true", help="reject images not of the model's input size")
    run.add_argument("--watch", type=Path, metavar="DIR",
                     help="after INPUTS, process images in DIR, those present at start and new ones once "
                          "completely written (Ctrl-C stops); symbolic links are not followed")
    run.add_argument("--poll", type=float, default=0.5, help="--watch poll interval in seconds; a file must be "
                                                             "unchanged for one interval (default 0.5)")
    run.add_argument("--skip-existing", action="store_true", help="--watch: ignore images already in DIR at start")
    run.add_argument("--annotated", type=Path, metavar="DIR",
                     help="detection bundles: write each image with its boxes drawn into DIR (PNG)")
    run.add_argument("--masks", type=Path, metavar="DIR",
                     help="segmentation bundles: write each image's mask into DIR (PNG, pixel = class index, "
                          "palette = class colours)")
    run.add_argument("--heatmaps", type=Path, metavar="DIR",
                     help="anomaly bundles: write each image's anomaly map over the image into DIR (PNG)")
    run.add_argument("--int8", action="store_true", help="run the bundle's int8 model (exported with --quantize "
                                                         "int8) instead of the fp32 one")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out file and images in "
                                                              "--annotated/--masks/--heatmaps")
    add_trust_flags(run)
    run.set_defaults(func=cmd_run)


def _check_outputs(paths: dict[str, tuple[Path | None, tuple[str, ...]]], overwrite: bool) -> None:
    """Check every output path ({flag: (path, suffixes)}) before any work."""
    from edge_runtime.outputs import check_output

    for flag, (path, suffixes) in paths.items():
        if path is not None:
            check_output(path, flag=flag, suffixes=suffixes, overwrite=overwrite)


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a bundle, print a summary, write the reports; 0 when every check passed, else 1."""
    from edge_runtime.validation.report import render_text, write_json, write_markdown
    from edge_runtime.validation.validate import validate_bundle

    _check_outputs({"--json": (args.json, (".json",)), "--report": (args.report, (".md",))},
                   args.overwrite)  # fail before minutes of work
    report = validate_bundle(args.bundle, data=args.data, backends=args.backends, atol=args.atol,
                             max_accuracy_drop=args.max_accuracy_drop, perturb=args.perturb,
                             progress=not args.no_progress, threads=args.threads, torch_model=args.torch_model,
                             reference_preprocessing=args.reference_preprocessing, trust=policy_from_args(args))
    print(render_text(report))
    if args.json:
        print(f"wrote {write_json(report, args.json, overwrite=args.overwrite)}")
    if args.report:
        print(f"wrote {write_markdown(report, args.report, overwrite=args.overwrite)}")
    return 0 if report.passed else 1


def cmd_run(args: argparse.Namespace) -> int:
    """Run the bundle on INPUTS (then --watch DIR); print a line per image and a summary; 1 if any image failed."""
    from edge_runtime.errors import InvalidArgumentError
    from edge_runtime.preprocessing import list_images
    from edge_runtime.validation.results import RESULT_SUFFIXES, ResultWriter, summary
    from edge_runtime.validation.run import BundleRunner, Result, summary_line, watch

    if not args.inputs and args.watch is None:
        raise InvalidArgumentError("give image files/directories, --watch DIR, or both; e.g. "
                                   "edge-runtime run bundle/ images/")
    if args.watch is not None and not args.watch.is_dir():
        raise InvalidArgumentError(f"--watch {str(args.watch)!r} is not a directory; pass an existing folder.")
    _check_outputs({"--out": (args.out, RESULT_SUFFIXES)}, args.overwrite)
    files = list_images(args.inputs)
    runner = BundleRunner(args.bundle, threads=args.threads, device=args.device, sparsity=args.sparsity,
                          exact_size=args.exact_size, trust=policy_from_args(args), annotated=args.annotated,
                          masks=args.masks, heatmaps=args.heatmaps, overwrite=args.overwrite, int8=args.int8)
    if runner.post is not None and runner.post.images is not None:
        runner.post.images.check(files)  # an existing image fails now, not after the run
    writer = (ResultWriter(args.out, overwrite=args.overwrite, fields=runner.result_type.FIELDS)
              if args.out is not None else None)
    results: list[Any] = []

    def emit(result: Any) -> None:
        print(summary_line(result), file=sys.stderr if result.error else sys.stdout, flush=True)
        results.append(result)
        if writer is not None:
            writer.add(result)

    try:
        for result in runner.run_files(files, args.batch):
            emit(result)
        if args.watch is not None:
            print(f"watching {args.watch} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            watch(args.watch, runner, batch=args.batch, poll_interval=args.poll, on_result=emit,
                  include_existing=not args.skip_existing, done=files)
        checked = runner.settle_line_check()  # fewer images than the check needs: finish it for the next start
        if checked:
            print(f"engine decision checked on {checked} golden runs after the images: "
                  f"{runner.session.engine_report.line_check}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if writer is not None:
            print(f"wrote {writer.close()}")
    for line in summary(results):
        print(line, file=sys.stderr)
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"{failed} of {len(results)} image(s) failed", file=sys.stderr)
    return 1 if failed else 0
