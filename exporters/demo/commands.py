"""``edge-runtime demo``: argparse wiring for :func:`exporters.demo.pipeline.run_demo`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``demo [--out DIR] [--model cnn|vit] [--device NAME ...] [--train] [--no-segmenter]``; sets ``func``."""
    p = subparsers.add_parser("demo", help="run the whole pipeline on the embedded inspection data and models",
                              description="Export a shipped sparse inspection model with its measured sparsity, "
                                          "validate it on every backend, profile it here and estimate it on "
                                          "device profiles; then the same for the shipped defect segmenter "
                                          "(where is the defect); writes DIR/report.md.",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="examples:\n  edge-runtime demo\n"
                                     "  edge-runtime demo --out demo-out --device raspberry-pi-5 --overwrite\n\n"
                                     "exit status: 0 validation passed, 1 it failed, 2 a usage error.")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory (default: demo-out)")
    p.add_argument("--model", choices=["cnn", "vit"], default="cnn", help="which shipped model (default: cnn)")
    p.add_argument("--device", action="append", dest="devices", metavar="NAME",
                   help="device profile to estimate on (repeatable; default: every shipped profile)")
    p.add_argument("--train", action="store_true", help="train the model here (a few minutes) instead of "
                                                        "loading the shipped checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo in --out")
    p.add_argument("--runs", type=int, default=200, help="timed calls per backend when profiling (default: 200)")
    p.add_argument("--threads", type=int, default=1, help="threads when profiling (default: 1, stable on "
                                                          "shared machines)")
    p.add_argument("--test-images", type=int, default=200, help="test images to validate on (default: 200)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 model (export, validation and "
                                                           "profiling are fp32 only)")
    p.add_argument("--no-segmenter", action="store_true", help="skip the defect segmenter (its export, "
                                                               "validation, profiling and report section)")
    p.add_argument("--seg-images", type=int, default=100, help="test images the segmenter is validated on, half "
                                                               "with a defect (default: 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints progress and a summary; exit code 0 when validation passed."""
    from exporters.demo.pipeline import DemoSettings, run_demo

    settings = DemoSettings(out=args.out, model=args.model, train=args.train, overwrite=args.overwrite,
                            runs=args.runs, threads=args.threads, test_images=args.test_images, progress=not args.no_progress,
                            quantize=None if args.no_int8 else "int8", segmenter=not args.no_segmenter,
                            seg_images=args.seg_images,
                            **({"devices": tuple(args.devices)} if args.devices else {}))
    result = run_demo(settings, say=print)
    print("\nSummary")
    for line in result.summary:
        print(f"  {line}")
    print(f"\nReport: {result.report}")
    return 0 if result.passed else 1
