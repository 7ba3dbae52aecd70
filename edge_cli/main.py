"""``edge-runtime``: the parser of every command and the one error boundary.

Each command family lives next to the code it drives and contributes its subcommands through an
``add_*`` function taking argparse's subparsers; every subcommand sets ``func(args) -> int``.
Command modules import their heavy dependencies (torch, onnxruntime, Pillow) inside the
handlers, so every command is listed everywhere and a missing package is reported when it is
needed, with the ``pip install`` that provides it.

Exit status: 0 success; 1 a check failed (``validate``, ``run`` with failed images, ``demo``);
2 a user error (bad flag, file, bundle, profile, missing package), one line on stderr;
3 an internal bug (a traceback and a "please report" line); 130 interrupted; 141 the reader of
stdout went away (``| head``), silently.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from typing import NoReturn, Sequence

from device_profiles import ProfileError
from edge_runtime import __version__
from edge_runtime import keys_command
from edge_runtime.warmup import add_parser as add_warmup_parser
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.profiling import commands as profiling_commands
from edge_runtime.validation import commands as validation_commands
from exporters import commands as exporter_commands
from exporters.demo import commands as demo_commands

from edge_cli.quiet import quiet_third_party

EXIT_OK, EXIT_FAILED_CHECK, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 3, 130, 141
ISSUES_URL = "the project's issue tracker"

#: Our packages: an ImportError naming one of them is a bug, never a missing extra.
_OURS = ("edge_runtime", "exporters", "device_profiles", "edge_cli")
#: Third-party top-level module -> the pip extra of edge-runtime that installs it.
_EXTRA_OF = {"torch": "export", "onnxscript": "export", "onnxruntime": "ort", "torchvision": "export",
             "litert_torch": "tflite", "ai_edge_litert": "tflite", "ai_edge_quantizer": "tflite", "PIL": "tools",
             "matplotlib": "tools", "tqdm": "tools", "threadpoolctl": "tools", "cryptography": "tools"}

EPILOG = """examples:
  edge-runtime demo                                    # the whole pipeline on shipped data (needs [export])
  edge-runtime export mypkg.models:make_model --input-shape 1,3,224,224 --calib images/ --out bundle
  edge-runtime validate bundle --data images/ --report validation.md
  edge-runtime run bundle images/ --out results.csv
  edge-runtime profile bundle --device raspberry-pi-5
  edge-runtime devices list

exit status: 0 ok, 1 a check failed, 2 a usage/input error, 3 an internal bug."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line naming the fix, exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see 'prog --help')`` and exit 2."""
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command family.

    Returns:
        The top-level parser; each subcommand sets ``func(args) -> int``.
    """
    parser = Parser(prog="edge-runtime", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                    description="Run ONNX models on edge CPUs, skipping inactive neurons; export, validate "
                                "and profile them for Raspberry Pi and Jetson targets.")
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output and third-party warnings (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    profiling_commands.add_parsers(sub)          # devices, profile
    exporter_commands.add_inspect_parser(sub)    # inspect (torch-free)
    validation_commands.add_parsers(sub)         # validate, run
    exporter_commands.add_export_parser(sub)     # export (needs the [export] extra when run)
    demo_commands.add_parser(sub)                # demo (needs [export], optionally [tflite])
    keys_command.add_parser(sub)                 # keys (needs the [signing] extra when run)
    add_warmup_parser(sub)                       # warmup (compile the kernels once, at deploy time)
    return parser


def one_line(message: object) -> str:
    """``message`` as one line (newlines and runs of spaces collapsed)."""
    return re.sub(r"\s+", " ", str(message)).strip()


def _missing_package(exc: ImportError) -> str | None:
    """The install hint for a third-party ImportError, or None when the import is ours (a bug)."""
    name = (exc.name or "").split(".")[0]
    if not name or name in _OURS:
        return None
    extra = _EXTRA_OF.get(name)
    hint = f'pip install "edge-runtime[{extra}]"' if extra else f"pip install {name}"
    return f"this command needs the Python package {name!r}, which is not installed here; install it with: {hint}"


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.func`` inside the error boundary; returns the exit status."""
    words = [w for w in (getattr(args, "command", None), getattr(args, "devices_command", None)) if w]
    prefix = f"error: edge-runtime {' '.join(words)}: " if words else "error: "
    try:
        return int(args.func(args) or 0)
    except (EdgeRuntimeError, ProfileError) as exc:
        print(prefix + one_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:
        hint = _missing_package(exc)
        if hint is None:
            return _internal_bug(exc)
        print(prefix + hint, file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(prefix + "out of memory; use a smaller --batch, fewer --threads or a smaller model.", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `edge-runtime devices list | head`: the reader has gone, not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not raise again
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.filename is None:
            return _internal_bug(exc)
        print(prefix + f"cannot use {exc.filename!s}: {exc.strerror or exc}; check the path and its "
                       f"permissions.", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the boundary: anything else is our bug
        return _internal_bug(exc)


def _internal_bug(exc: BaseException) -> int:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"edge-runtime {__version__}: internal error ({type(exc).__name__}). This is a bug in edge-runtime, "
          f"not in your input: please report it at {ISSUES_URL} with the command and the traceback above.",
          file=sys.stderr)
    return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-runtime`` console script; returns the exit code.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status (see the module docstring).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - an argument type function of ours failed: a bug
        return _internal_bug(exc)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    quiet_third_party(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
