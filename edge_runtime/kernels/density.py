"""Density of an activation tensor: the fraction of nonzero entries.

Public API (used by the planner/dispatch to choose sparse or dense kernels)::

    density(x) -> float          # nonzeros / size, in [0, 1]; 1.0 for an empty tensor
    density_at_most(x, limit) -> (at_most, d)   # the dispatch question, counting only as far as needed
    row_densities(x2d) -> (M,)   # per-row density of a 2-D array, float64

*Density* = fraction of nonzeros; *sparsity* = 1 - density (docs/references.md
vocabulary). float32 C-contiguous inputs (every activation the dispatcher checks) are
counted by a numba kernel with 16-lane compare masks (~0.07 ns per value); others by
``np.count_nonzero``. Either way a per-call check in front of every kernel is cheap.
"""
from __future__ import annotations

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_runtime.errors import InvalidInputError
from edge_runtime.kernels.fastmath import FAST
from edge_runtime.kernels.simd import nonzero_mask16, popcount


def density(x: ArrayLike) -> float:
    """Return the fraction of nonzero entries of ``x``.

    NaN counts as nonzero (it is not an inactive neuron).

    Args:
        x: any array; non-contiguous views are fine (no copy is made for ndarrays).

    Returns:
        ``count_nonzero(x) / x.size`` as a Python float; 1.0 for an empty array, so an
        empty tensor never routes to a sparse kernel.

    Example:
        >>> density(np.array([0.0, 1.0, 0.0, 2.0], dtype=np.float32))
        0.5
    """
    a = np.asarray(x)
    if a.size == 0:
        return 1.0
    if a.dtype == np.float32 and a.flags.c_contiguous:
        # np.count_nonzero on floats runs ~0.8 ns/value; this loop vectorises (~0.15 ns/value), which
        # matters because dispatch measures every candidate layer's input on every call
        return _count_nonzero_f32(a.reshape(-1)) / a.size
    return float(np.count_nonzero(a) / a.size)


#: Values counted between two checks of :func:`density_at_most` (a multiple of 64).
_CHUNK = 4096


def density_at_most(x: ArrayLike, limit: float) -> tuple[bool, float]:
    """Whether ``density(x) <= limit``, counting only as far as the answer needs.

    The dispatcher's question. Nonzeros are counted chunk by chunk (4096 values); once
    more than ``limit * size`` have been seen the answer is "above" and counting stops,
    so a dense input in front of a layer with a low crossover costs a small fraction of
    a full count (limit 0.09 on a 256x14x14 input: 0.4 instead of 4.5 us).

    Returns:
        ``(at_most, d)``: ``d`` is the exact density when ``at_most`` is True (the whole
        input was counted) and the density of the part counted when it is False (an
        estimate, above ``limit``).
    """
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    n = a.size
    if n and a.dtype == np.float32 and a.flags.c_contiguous:
        count, seen = _count_nonzero_upto_f32(a, int(limit * n))
        d = count / seen
        return seen == n and d <= limit, d
    d = density(a)
    return d <= limit, d


@numba.njit(cache=True, fastmath=FAST, error_model="numpy")
def _count_nonzero_upto_f32(x, stop):  # pragma: no cover - compiled
    """(count, seen): nonzeros of x.ravel()[:seen], stopping after the chunk where count > stop.

    Takes the C-contiguous array of any rank (one compile per rank) and flattens it here:
    the per-call Python work of the check is ~1 us, a third of it was ``reshape``.
    """
    flat = x.reshape(-1)
    n = flat.size
    count = 0
    for s0 in range(0, n, _CHUNK):
        s1 = min(n, s0 + _CHUNK)
        count += _count_nonzero_f32(flat[s0:s1])
        if count > stop:
            return count, s1
    return count, n


@numba.njit(cache=True, fastmath=FAST, error_model="numpy")
def _count_nonzero_f32(flat: NDArray[np.float32]) -> int:  # pragma: no cover - compiled
    """Nonzeros of a 1-D float32 array: 16-lane compare masks and popcounts, 4 chains.

    ~0.07 ns per element on the build machine, 7 us on a 128x28x28 input (the scalar
    ``count += x != 0`` loop LLVM produced took 0.16 ns, 16 us). NaN counts as nonzero,
    like ``np.count_nonzero``.
    """
    n = flat.size
    nb = n - n % 64
    c0 = c1 = c2 = c3 = 0
    for k in range(0, nb, 64):
        c0 += popcount(nonzero_mask16(flat, k))
        c1 += popcount(nonzero_mask16(flat, k + 16))
        c2 += popcount(nonzero_mask16(flat, k + 32))
        c3 += popcount(nonzero_mask16(flat, k + 48))
    count = c0 + c1 + c2 + c3
    for i in range(nb, n):
        v = flat[i]
        count += v != 0  # NaN != 0: counted as nonzero
    return count


def row_densities(x: ArrayLike) -> NDArray[np.float64]:
    """Return the density of each row of a 2-D array (e.g. each token of a (M, K) input).

    Args:
        x: 2-D array (M, K).

    Returns:
        float64 array (M,); rows of length 0 have density 1.0.

    Raises:
        InvalidInputError: if ``x`` is not 2-D.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise InvalidInputError(f"row_densities expects a 2-D array (M, K), got shape {a.shape}; reshape it first")
    if a.shape[1] == 0:
        return np.ones(a.shape[0], dtype=np.float64)
    return np.count_nonzero(a, axis=1) / a.shape[1]
