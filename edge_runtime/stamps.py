"""What the kernels' compiled code depends on, as one digest (numba-free, so a session that never
loads numba can still tell whether machine code built earlier is current).

numba's on-disk cache (:mod:`edge_runtime.kernels.cache`) and the kernels compiled ahead of time
(:mod:`edge_runtime.engine.aot`) are both keyed by :func:`package_stamp`: a kernel inlines helpers
from other files, so any change to any kernel or op source, or another numba, makes them stale.
"""
from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Iterable

_ROOT = Path(__file__).resolve().parent
#: Packages whose numba functions inline each other: a change to any file invalidates them all.
PACKAGE_DIRS: tuple[Path, ...] = (_ROOT / "kernels", _ROOT / "ops")
#: numba-free modules whose values the kernels inline (the activation codes): part of the stamp.
SHARED_FILES: tuple[Path, ...] = (_ROOT / "act_codes.py",)


def numba_version() -> str:
    """The installed numba's version, read from its metadata (numba is not imported); "" without one."""
    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:
        return ""


def package_stamp(dirs: Iterable[Path] = PACKAGE_DIRS, files: Iterable[Path] = SHARED_FILES,
                  numba: str | None = None) -> str:
    """sha256 of numba's version, every ``.py`` file (relative path and bytes) under ``dirs`` and ``files``.

    Args:
        dirs: package directories (searched recursively, ``__pycache__`` skipped).
        files: single modules the kernels inline values from.
        numba: numba's version (default: :func:`numba_version`).

    Returns:
        The hex digest.

    Example:
        >>> len(package_stamp())
        64
    """
    h = hashlib.sha256((numba_version() if numba is None else numba).encode())
    for d in dirs:
        d = Path(d)
        for f in sorted(p for p in d.rglob("*.py") if "__pycache__" not in p.parts):
            h.update(str(f.relative_to(d.parent)).encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    for f in files:
        h.update(Path(f).name.encode() + b"\0" + Path(f).read_bytes() + b"\0")
    return h.hexdigest()
