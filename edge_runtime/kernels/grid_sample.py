"""GridSample's gather-and-sum: each output pixel adds its taps' ``weight * X`` over every channel.

The caller (:mod:`edge_runtime.ops.grid_sample`) resolves each spatial axis into taps (input
index, weight, in-range flag) for every output pixel, vectorised in numpy and in the input's float
type. Here the ``taps^r`` tap combinations of each pixel are formed once (flat input offset, the
product of the axes' weights in axis order, and whether every axis is in range), then every
channel sums its combinations in ``itertools.product`` order, as the numpy formulation did; under
``zeros`` padding a combination with a tap outside the map adds nothing (not ``0 * X``, so a NaN
beyond the border does not leak in, as in onnxruntime).
"""
from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(cache=True, boundscheck=False, nogil=True)
def _combine(idx, w, valid, strides, index, weight, ok):  # pragma: no cover - compiled
    """(r, T, N, P) taps -> (N, P, T**r) offsets, weights and in-range flags; the first axis varies slowest."""
    r, taps, n, p = idx.shape
    combos = index.shape[2]
    digit = np.empty((combos, r), np.int64)  # combination k's tap on each axis, the last axis fastest
    for k in range(combos):
        rem = k
        for a in range(r - 1, -1, -1):
            digit[k, a] = rem % taps
            rem //= taps
    for b in range(n):
        for q in range(p):
            for k in range(combos):
                off, inside, wt = 0, True, w[0, 0, b, q]
                for a in range(r):
                    t = digit[k, a]
                    off += strides[a] * idx[a, t, b, q]
                    inside = inside and valid[a, t, b, q]
                    wt = w[a, t, b, q] if a == 0 else wt * w[a, t, b, q]  # (w0 * w1) * w2, numpy's product
                index[b, q, k], weight[b, q, k], ok[b, q, k] = off, wt, inside


@numba.njit(cache=True, boundscheck=False, nogil=True)
def _gather(flat, index, weight, ok, zeros_padding, zero, y):  # pragma: no cover - compiled
    n, c, _ = flat.shape
    p, combos = index.shape[1], index.shape[2]
    for b in range(n):
        for ch in range(c):
            src = flat[b, ch]
            for q in range(p):
                acc = zero
                for k in range(combos):
                    if zeros_padding and not ok[b, q, k]:
                        continue
                    acc += weight[b, q, k] * src[index[b, q, k]]
                y[b, ch, q] = acc


def gather_taps(flat: NDArray, idx: NDArray, w: NDArray, valid: NDArray, strides: NDArray,
                zeros_padding: bool) -> NDArray:
    """Sum ``weight * X`` over every tap combination of every output pixel.

    Args:
        flat: (N, C, S) the input with its spatial axes flattened, float32 or float64.
        idx / w / valid: (r, T, N, P) per axis and tap: clamped index, weight (flat's type), in range.
        strides: (r,) int64 offset of one step along each spatial axis in the flattened map.
        zeros_padding: a combination with a tap outside the map adds nothing.

    Returns:
        (N, C, P) in flat's dtype.
    """
    r, taps, n, p = idx.shape
    combos = taps ** r
    index = np.empty((n, p, combos), np.int64)
    weight = np.empty((n, p, combos), flat.dtype)
    ok = np.empty((n, p, combos), np.bool_)
    _combine(idx, w, valid, strides, index, weight, ok)
    y = np.empty((n, flat.shape[1], p), flat.dtype)
    _gather(np.ascontiguousarray(flat), index, weight, ok, bool(zeros_padding), np.zeros((), flat.dtype)[()], y)
    return y
