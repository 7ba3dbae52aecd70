"""Alias kept for ``python -m edge_runtime.cli``: the command line lives in :mod:`edge_cli.main`.

The CLI sits above ``edge_runtime``, ``exporters`` and ``device_profiles``; this module only
forwards to it (imported inside :func:`main`, so importing ``edge_runtime`` never loads it).
"""
from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``edge-runtime`` command line (see :func:`edge_cli.main.main`)."""
    from edge_cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
