"""numba kernels (dense and zero-skipping) behind the ops.

Importing the package first stamps numba's on-disk cache for the kernels and ops
(:mod:`edge_runtime.kernels.cache`), so a changed helper module can never run stale
inlined code.
"""
from __future__ import annotations

from edge_runtime.kernels import cache as _cache

CACHE_STAMP = _cache.install()
