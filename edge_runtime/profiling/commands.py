"""CLI subcommands ``devices`` and ``profile`` (wired into the command line by edge_cli/main.py).

Usage::

    edge-runtime devices list
    edge-runtime devices show raspberry-pi-4
    edge-runtime devices calibrate [--out FILE] [--overwrite] [--quick]
    edge-runtime profile MODEL_OR_BUNDLE [--device NAME ...] [--backend edge|edge-dense|edge-numba|onnxruntime|litert|edge-int8|edge-numba-int8|onnxruntime-int8|litert-int8 ...]
        [--runs N] [--warmup N] [--threads N] [--input auto|random|golden|FILE.npy/.npz] [--json FILE]
        [--plot FILE.png] [--sparsity auto|off|force]

Each handler prints (this is the CLI) and returns an exit status.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_runtime.outputs import check_output
from edge_runtime.profiling.backends import BACKENDS
from edge_runtime.trust import add_trust_flags, policy_from_args


_RAW = argparse.RawDescriptionHelpFormatter


def add_parsers(subparsers: Any) -> None:
    """Add ``devices`` and ``profile`` to an argparse subparsers object; each sets ``func(args) -> int``."""
    dev = subparsers.add_parser("devices", help="list, show or calibrate device profiles", formatter_class=_RAW,
                                epilog="examples:\n  edge-runtime devices list\n"
                                       "  edge-runtime devices show raspberry-pi-5\n"
                                       "  edge-runtime devices calibrate --out my-board.toml")
    sub = dev.add_subparsers(dest="devices_command", required=True, metavar="{list,show,calibrate}")
    sub.add_parser("list", help="names of the available profiles", formatter_class=_RAW,
                   epilog="example:\n  edge-runtime devices list").set_defaults(func=cmd_devices_list)
    show = sub.add_parser("show", help="print one profile as TOML", formatter_class=_RAW,
                          epilog="examples:\n  edge-runtime devices show raspberry-pi-4\n"
                                 "  edge-runtime devices show ./my-board.toml")
    show.add_argument("name", help="a profile name from 'edge-runtime devices list', or a path to a .toml file")
    show.set_defaults(func=cmd_devices_show)
    cal = sub.add_parser("calibrate", help="measure this machine and write a host profile", formatter_class=_RAW,
                         epilog="examples:\n  edge-runtime devices calibrate --quick\n"
                                "  edge-runtime devices calibrate --out my-board.toml   # then: profile --device "
                                "my-board.toml")
    cal.add_argument("--out", type=Path, help="TOML file to write (default: print it); checked before measuring")
    cal.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    cal.add_argument("--quick", action="store_true", help="small problems, a few seconds")
    cal.set_defaults(func=cmd_devices_calibrate)

    prof = subparsers.add_parser(
        "profile", help="measure a model here and estimate it on devices", formatter_class=_RAW,
        epilog="examples:\n  edge-runtime profile bundle/ --device raspberry-pi-5 --device jetson-orin-nano\n"
               "  edge-runtime profile model.onnx --backend edge --backend onnxruntime --json p.json "
               "--plot p.png\n\nDevice figures are ESTIMATES from a cost model (docs/profiling.md), not "
               "measurements.")
    prof.add_argument("model", help="an .onnx file or a bundle directory")
    prof.add_argument("--device", action="append", default=[], metavar="NAME",
                      help="profile name or .toml to estimate latency on (repeatable; see 'devices list')")
    prof.add_argument("--backend", action="append", choices=BACKENDS, help="backend to measure (repeatable; "
                      "default edge, edge-numba, onnxruntime)")
    prof.add_argument("--runs", type=int, default=50, help="timed runs per backend (default 50)")
    prof.add_argument("--warmup", type=int, default=5, help="warm-up runs per backend (default 5)")
    prof.add_argument("--threads", type=int, default=None, help="threads for every backend (default: all CPUs)")
    prof.add_argument("--input", default="auto", metavar="auto|random|golden|FILE",
                      help="inputs to time: auto (default: a bundle's golden.npz, whose activation density is "
                           "what the model sees; random for a bare .onnx), random N(0,1), golden, or a .npy/.npz")
    prof.add_argument("--json", type=Path, help="write every figure to this .json file")
    prof.add_argument("--plot", type=Path, help="write a chart to this .png file (needs matplotlib)")
    prof.add_argument("--overwrite", action="store_true", help="replace existing --json/--plot files")
    prof.add_argument("--sparsity", choices=("auto", "off", "force"), default="auto",
                      help="edge backend: auto (sparse kernels where the input is sparse enough), off, force "
                           "(default auto)")
    prof.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_flags(prof)
    prof.set_defaults(func=cmd_profile)


def cmd_devices_list(args: argparse.Namespace) -> int:
    """Print one profile name per line with its description; a broken file is listed with its problem."""
    import device_profiles as dp

    files = dp.profile_files()  # one scan of the folders, not one per profile
    for name in sorted(set(files) | {"host"}):
        try:
            profile = dp.read_profile_file(files[name]) if name in files else dp.load_profile(name)
            about = profile.description
        except dp.ProfileError as exc:
            about = "UNUSABLE: " + " ".join(str(exc).split())
        print(f"{name:<20} {about}")
    return 0


def cmd_devices_show(args: argparse.Namespace) -> int:
    """Print a profile as TOML."""
    import device_profiles as dp

    print(dp.profile_to_toml(dp.load_profile(args.name)), end="")
    return 0


def cmd_devices_calibrate(args: argparse.Namespace) -> int:
    """Measure this machine and write (or print) the calibrated host profile."""
    import device_profiles as dp

    from edge_runtime.profiling.calibrate import calibrate_profile

    if args.out is not None:  # before minutes of measuring
        check_output(args.out, flag="--out", suffixes=(".toml",), overwrite=args.overwrite)
    cal = calibrate_profile(quick=args.quick)
    print(f"peak fp32 {cal.peak_fp32_gflops:.1f} GFLOP/s, copy bandwidth {cal.bandwidth_gbps:.2f} GB/s, "
          f"crossovers {cal.crossovers} (measured: {', '.join(cal.measured_crossovers) or 'none'})")
    for note in cal.notes:
        print(f"note: {note}")
    header = "calibrated by `edge-runtime devices calibrate`" + (" --quick" if args.quick else "")
    if args.out is None:
        print(dp.profile_to_toml(cal.profile, header=header), end="")
    else:
        print(f"wrote {dp.dump_profile(cal.profile, args.out, overwrite=args.overwrite, header=header)}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Profile a model and print the report; optional JSON and chart."""
    from edge_runtime.profiling import profile_model
    from edge_runtime.profiling.report import format_text, plot, write_json

    if args.json is not None:
        check_output(args.json, flag="--json", suffixes=(".json",), overwrite=args.overwrite)
    if args.plot is not None:
        check_output(args.plot, flag="--plot", suffixes=(".png",), overwrite=args.overwrite)
    result = profile_model(args.model, backends=tuple(args.backend) if args.backend else None,
                           devices=tuple(args.device), runs=args.runs, warmup=args.warmup, threads=args.threads,
                           input=args.input, progress=not args.no_progress, sparsity=args.sparsity,
                           trust=policy_from_args(args))
    print(format_text(result))
    if args.json is not None:
        print(f"wrote {write_json(result, args.json, overwrite=args.overwrite)}")
    if args.plot is not None:
        written = plot(result, args.plot, overwrite=args.overwrite)
        print(f"wrote {written}" if written else "no chart: matplotlib is not installed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run these subcommands alone, without the CLI's error boundary (tests): ``python -m edge_runtime.profiling.commands``."""
    parser = argparse.ArgumentParser(prog="edge-runtime")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
