"""``edge-runtime export`` and ``edge-runtime inspect`` subcommands (wired in edge_runtime/cli.py).

``inspect`` imports nothing from torch; ``export`` imports the exporters lazily.
"""
from __future__ import annotations

import argparse
import json
from typing import Any


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export SPEC --input-shape ... --calib ... --out ...``; sets ``func``."""
    p = subparsers.add_parser("export", help="export a PyTorch model to a bundle")
    p.add_argument("spec", help="model.pt2, TorchScript .pt, or package.module:factory")
    p.add_argument("--input-shape", required=True, help="e.g. 1,3,224,224 (NCHW)")
    p.add_argument("--calib", help="image directory (ImageFolder) or .npy (N, ...)")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--labels", help="comma-separated class names or a text file, one a line")
    p.add_argument("--mean", help="comma-separated per-channel mean")
    p.add_argument("--std", help="comma-separated per-channel std")
    p.add_argument("--channel-order", default="RGB", choices=["RGB", "BGR", "L"])
    p.add_argument("--formats", default="onnx,tflite",
                   help="onnx,tflite; suffix '?' = if possible, e.g. onnx,tflite?")
    p.add_argument("--overwrite", action="store_true")
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
    p.set_defaults(func=run_export)
    return p


def add_inspect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``inspect BUNDLE_OR_MODEL [--json]``; sets ``func``."""
    p = subparsers.add_parser("inspect", help="describe a bundle or an .onnx file")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run_inspect)
    return p


def _floats(text: str | None) -> list[float] | None:
    return None if text is None else [float(v) for v in text.split(",")]


def run_export(args: argparse.Namespace) -> int:
    """Run ``export``; prints the bundle path and returns 0."""
    from pathlib import Path

    import torch

    from edge_runtime.errors import InvalidArgumentError
    from exporters import export, load_model

    try:
        shape = [int(v) for v in args.input_shape.split(",")]
    except ValueError as exc:
        raise InvalidArgumentError(f"--input-shape {args.input_shape!r}: expected comma-"
                                   "separated ints such as 1,3,224,224.") from exc
    labels = None
    if args.labels:
        path = Path(args.labels)
        labels = path.read_text().split() if path.is_file() else args.labels.split(",")
    pre = None
    if len(shape) == 4:
        pre = {"input_size": shape[2:], "mean": _floats(args.mean), "std": _floats(args.std),
               "channel_order": args.channel_order, "layout": "NCHW"}
    bundle = export(load_model(args.spec), torch.randn(*shape), args.out,
                    calibration=args.calib, formats=args.formats.split(","),
                    labels=labels, preprocessing=pre, overwrite=args.overwrite,
                    target_sparsity=args.target_sparsity,
                    max_accuracy_drop=args.max_accuracy_drop,
                    per_channel_thresholds=args.per_channel_thresholds, sign_key=args.sign_key)
    print(f"wrote {bundle.path} ({', '.join(sorted(bundle.manifest['files']))})")
    fit = (bundle.manifest.get("sparsity") or {}).get("thresholds")
    if fit:
        chosen = sum(a["threshold"] is not None for a in fit["activations"].values())
        print(f"thresholds on {chosen}/{len(fit['activations'])} activations: {fit['metric']} "
              f"{fit['metric_before']:.2f} -> {fit['metric_after']:.2f}, "
              f"{len(fit['backoffs'])} back-offs")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """Run ``inspect``; prints text or JSON; returns 1 when the bundle fails its integrity checks."""
    from edge_runtime.inspect import inspect_path, render

    info = inspect_path(args.path)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 1 if info.get("integrity") else 0
