"""A version stamp on numba's on-disk cache of the kernels, so a changed helper never runs stale.

numba's cache (``cache=True``) keys a compiled function by a hash of *its own* source file.
A kernel inlines the helpers it calls from other files (``kernels/simd.py``'s intrinsics,
``kernels/sparse_common.py``'s ``accumulate``, ``depthwise.act_scalar``), so after a helper
changes, a kernel whose file did not change loads its old machine code with the old helper
inside (numba documents this limitation: "Cache invalidation", docs/source/developer/caching).

:func:`install` puts a locator in front of numba's own ones for the files of the packages in
:data:`PACKAGE_DIRS`: it stores the cache where numba would have and returns, as the source stamp
numba compares, the pair (the file's own hash, :func:`package_stamp` of every ``.py`` file
under those packages and numba's version). Any change to any kernel or op source therefore
invalidates every cached kernel of ours (numba recompiles and overwrites the index); other
libraries' numba functions are untouched. ``NUMBA_CACHE_LOCATOR_CLASSES`` (numba's own override)
bypasses this, as it bypasses numba's defaults.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numba
from numba.core import caching

from edge_runtime.stamps import PACKAGE_DIRS, SHARED_FILES
from edge_runtime.stamps import package_stamp as _package_stamp

logger = logging.getLogger(__name__)


def package_stamp(dirs: Iterable[Path] = PACKAGE_DIRS, files: Iterable[Path] = SHARED_FILES) -> str:
    """:func:`edge_runtime.stamps.package_stamp` with the numba this process imported.

    Example:
        >>> len(package_stamp())
        64
    """
    return _package_stamp(dirs, files, numba.__version__)


def _stamped(base: type, dirs: tuple[Path, ...], stamp: str) -> type:
    """``base`` (a numba locator class), limited to files under ``dirs``, with ``stamp`` in its source stamp."""

    class Stamped(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            path = Path(os.path.abspath(py_file))
            if not any(d == path.parent or d in path.parents for d in dirs):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self) -> Any:
            return (super().get_source_stamp(), stamp)

    Stamped.__name__ = Stamped.__qualname__ = f"PackageStamped{base.__name__}"
    return Stamped


def install(dirs: Iterable[Path] = PACKAGE_DIRS) -> str:
    """Put stamped locators for ``dirs`` first in numba's locator list (idempotent per ``dirs``).

    Must run before the first ``@njit(cache=True)`` decorator of those packages executes
    (``edge_runtime.kernels`` calls it on import; ``edge_runtime.ops`` imports the kernels first).

    Args:
        dirs: package directories whose numba functions share the stamp.

    Returns:
        The stamp (hex digest).
    """
    dirs_t = tuple(Path(d).resolve() for d in dirs)
    stamp = package_stamp(dirs_t)
    impl = caching.CacheImpl
    keep = [c for c in impl._locator_classes if getattr(c, "_edge_runtime_dirs", None) != dirs_t]
    bases = (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, caching.UserWideCacheLocator)
    ours = []
    for base in bases:
        cls = _stamped(base, dirs_t, stamp)
        cls._edge_runtime_dirs = dirs_t
        ours.append(cls)
    impl._locator_classes = ours + keep
    logger.debug("numba cache stamp %s for %s", stamp[:12], [str(d) for d in dirs_t])
    return stamp
