"""The ``edge-runtime`` command line.

Each command family lives next to the code it drives and contributes its
subcommands through an ``add_*`` function taking argparse's subparsers; every
subcommand sets ``func(args) -> int``. Host-only families (export needs torch)
are registered as placeholders with an install hint when their extra is missing.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError

_OURS = ("edge_runtime", "exporters", "device_profiles")

#: (module, function, command names it adds, pip extra that provides its dependencies)
COMMAND_FAMILIES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("edge_runtime.profiling.commands", "add_parsers", ("devices", "profile"), "tools"),
    ("exporters.commands", "add_inspect_parser", ("inspect",), ""),  # torch-free
    ("edge_runtime.keys_command", "add_parser", ("keys",), "signing"),
    ("edge_runtime.validation.commands", "add_parsers", ("validate", "run"), "tools"),
    ("exporters.commands", "add_export_parser", ("export",), "export"),
    ("exporters.demo.commands", "add_parser", ("demo",), "export,tflite"),
)


def _placeholder(sub: argparse._SubParsersAction, names: tuple[str, ...], extra: str, exc: Exception) -> None:
    for name in names:
        p = sub.add_parser(name, help=f"(unavailable here: {exc})", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)

        def missing(args: argparse.Namespace, _exc: Exception = exc, _name: str = name) -> int:
            hint = f'pip install "edge-runtime[{extra}]"' if extra else "reinstall edge-runtime"
            print(f"error: 'edge-runtime {_name}' needs a package that is not installed ({_exc}). "
                  f"Install it with: {hint}", file=sys.stderr)
            return 2

        p.set_defaults(func=missing)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every command family that can be imported here."""
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Run ONNX models on edge CPUs, skipping inactive neurons; export, validate and "
                    "profile them for Raspberry Pi and Jetson targets.")
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, func, names, extra in COMMAND_FAMILIES:
        try:
            add: Callable[[argparse._SubParsersAction], None] = getattr(importlib.import_module(module), func)
        except ImportError as exc:
            if (getattr(exc, "name", None) or "").split(".")[0] in _OURS:
                raise  # our own module is broken: never hide that behind an install hint
            _placeholder(sub, names, extra, exc)
            continue
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-runtime`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
