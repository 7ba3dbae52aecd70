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
def _reflect(x, lo, hi, zero):  # pragma: no cover - compiled
    """Fold ``x`` into [lo, hi] by reflecting at the nearer border as often as needed (all in x's type)."""
    span = hi - lo
    if span <= zero:
        return lo
    below, above = x < lo, x > hi
    d = lo - x if below else (x - hi if above else zero)
    n = np.trunc(d / span)
    r = d - n * span
    even = n % 2 == 0
    if below:
        return lo + r if even else hi - r
    if above:
        return hi - r if even else lo + r
    return x


@numba.njit(cache=True, boundscheck=False, nogil=True)
def _axis_taps(coord, size, fsize, mode, reflect, lo, hi, c, offsets, idx, w, valid):  # pragma: no cover
    """Per coordinate: each tap's clamped index, weight and in-range flag, written to (T, M) arrays.

    ``c`` holds the constants in the coordinate's type: 0, 1, 2, 3, 4, 5, 8, -0.75 (Keys' a), and
    ``offsets`` each tap's offset from the base pixel, so every operation rounds as numpy's float32
    formulas do (a Python literal or an integer would promote to float64).
    """
    zero, one, two, three, four, five, eight, a = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    for m in range(coord.size):
        x = coord[m]
        if mode == 0:  # nearest: the coordinate itself, weight 1
            base = x
            w[0, m] = one
        else:
            base = np.floor(x)
            t = x - base
            if mode == 1:
                w[0, m], w[1, m] = one - t, t
            else:  # Keys' cubic convolution over base-1 .. base+2
                u, v, s = t + one, one - t, two - t
                w[0, m] = ((a * u - five * a) * u + eight * a) * u - four * a
                w[1, m] = ((a + two) * t - (a + three)) * t * t + one
                w[2, m] = ((a + two) * v - (a + three)) * v * v + one
                w[3, m] = ((a * s - five * a) * s + eight * a) * s - four * a
        for k in range(idx.shape[0]):
            pos = base + offsets[k]
            if reflect:
                pos = np.trunc(_reflect(pos, lo, hi, zero))
            if np.isnan(pos):  # NaN: outside
                i = -1
            else:
                i = int(min(max(pos, -one), fsize))  # far away: just outside
            valid[k, m] = 0 <= i < size
            idx[k, m] = min(max(i, 0), size - 1)


def axis_taps(coord: NDArray, size: int, mode: str, reflect: bool, lo: float, hi: float
              ) -> tuple[NDArray, NDArray, NDArray]:
    """Taps of one spatial axis for every coordinate (flattened): index, weight, in range, each (T, M).

    Args:
        coord: pixel coordinates (any shape), float32 or float64; ``nearest`` ones already rounded.
        size: the axis length; mode: ``nearest`` / ``linear`` / ``cubic`` (1, 2 or 4 taps);
        reflect: ``reflection`` padding, folding each tap into [lo, hi] before truncation.
    """
    flat = np.ascontiguousarray(coord).reshape(-1)
    taps = {"nearest": 1, "linear": 2, "cubic": 4}[mode]
    idx = np.empty((taps, flat.size), np.int64)
    w = np.empty((taps, flat.size), flat.dtype)
    valid = np.empty((taps, flat.size), np.bool_)
    dt = flat.dtype.type
    consts = np.array([0, 1, 2, 3, 4, 5, 8, -0.75], flat.dtype)
    offsets = np.array({"nearest": [0], "linear": [0, 1], "cubic": [-1, 0, 1, 2]}[mode], flat.dtype)
    _axis_taps(flat, int(size), dt(size), ("nearest", "linear", "cubic").index(mode), bool(reflect), dt(lo), dt(hi),
               consts, offsets, idx, w, valid)
    return idx, w, valid


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
