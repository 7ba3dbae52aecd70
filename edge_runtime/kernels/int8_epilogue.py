"""int8 epilogues shared by the int8 kernels: requantize int32 sums, optionally look the byte up in a table.

``y = saturate(rint(float32(acc + bias) * mult) + zp)``: the bias is added in int32 before
the float scale, as onnxruntime's MLAS does, so the result is QLinearConv's exactly (round half
to even, saturate to uint8/int8, a fused ReLU clamps at the zero point). With a table (a
QuantizedLookup folded into the conv by :mod:`edge_runtime.passes.fuse_lookup`) the output is
``table[y & 255]``: the byte's bit pattern indexes the 256 entries, for uint8 and int8 alike.

:func:`requantize_nchw` writes a pixel-major (P, Mp) accumulator block into a channel-major
(M, P) plane in 16x16 tiles: each tile reads 16 contiguous accumulators per pixel and writes
16 contiguous bytes per channel, instead of requantizing pixel rows and letting numpy
transpose the (P, M) bytes afterwards (a second pass with a column-strided read).
"""
from __future__ import annotations

from typing import Iterator

import numba
import numpy as np

from edge_runtime.kernels.simd import transpose16_bytes

__all__ = ["requantize_into", "requantize_nchw", "identity_table", "affine_lookup", "NO_LOOKUP"]

#: 1.5 * 2**23: adding and subtracting it rounds a float32 of magnitude < 2**22 to the nearest
#: integer, ties to even (IEEE round-to-nearest), in a form LLVM vectorises (a rint call is scalar).
_ROUND = np.float32(12582912.0)
#: Tile edge of the NCHW epilogue (16 int32 = one zmm / two ymm / four NEON q registers).
TILE = 16


def identity_table(dtype: object) -> np.ndarray:
    """The table that changes nothing for ``dtype`` (uint8 or int8): ``table[b & 255] == b``.

    Example:
        >>> int(identity_table(np.int8)[255])
        -1
    """
    return np.arange(256, dtype=np.uint8).view(np.dtype(dtype)).copy()  # type: ignore[call-overload]


#: :func:`affine_lookup`'s answer for "no arithmetic form": the kernels gather from the table.
NO_LOOKUP = np.zeros(6, np.float32)


def affine_lookup(table: np.ndarray, in_dtype: object) -> np.ndarray | None:
    """``(threshold, below, slope, offset, low, high)`` float32 when the table is that arithmetic form, else None.

    ``table[q & 255] == (below if q < threshold else min(max(rint(q * slope + offset), low), high))``
    for every value ``q`` of ``in_dtype`` (uint8/int8), with the float32 operations of
    :func:`lookup_float`; each candidate fit (slopes near the least-squares one, the offsets
    that round every byte right) is checked on all 256 bytes by that compiled function, so a
    table it does not reproduce exactly returns None and the kernels gather from it.

    Example:
        >>> t = np.where(np.arange(256) < 140, 0, np.clip(np.rint((np.arange(256) - 128) * 2.25), 0, 255))
        >>> affine_lookup(t.astype(np.uint8), np.uint8)[:2].tolist()
        [140.0, 0.0]
    """
    table = np.asarray(table)
    values = np.arange(256, dtype=np.uint8).view(np.dtype(in_dtype)).astype(np.float64)  # type: ignore
    order = np.argsort(values)
    q, y = values[order], table[order].astype(np.float64)
    out = table.dtype
    low, high = (0.0, 255.0) if out == np.uint8 else (-128.0, 127.0)
    changed = np.flatnonzero(y != y[0])
    if changed.size == 0:
        candidates = [(q[-1] + 1.0, y[0], 0.0, y[0])]
    else:
        first = changed[0]
        candidates = [(q[first], y[0], *fit) for fit in _rounding_fits(q[first:], y[first:], low, high)]
    want, qf = y.astype(np.float32), q.astype(np.float32)
    for params in candidates:
        p = np.array([*params, low, high], np.float32)
        if np.array_equal(_lookup_all(qf, p[0], p[1], p[2], p[3], p[4], p[5]), want):
            return p
    return None


def _rounding_fits(q: np.ndarray, y: np.ndarray, low: float, high: float) -> Iterator[tuple[float, float]]:
    """Candidate (slope, offset) for rint(q * slope + offset) == y (past the bound where y is saturated).

    Slopes near the least-squares one; for each, the offsets every point allows (ties included:
    the caller checks the rounding of each candidate exactly).
    """
    inner = (y > low) & (y < high)
    if inner.sum() < 2:
        return
    slope = np.polyfit(q[inner], y[inner], 1)[0]
    steps = np.linspace(-1e-3, 1e-3, 41)
    dyadic = {round(slope * 2.0 ** k) / 2.0 ** k for k in range(12)}  # exact ratios (2.25, 0.5): ties round alike
    near = [d for d in sorted(dyadic) if abs(d - slope) <= 1e-3 * abs(slope)]
    for s in [*near, *(slope * (1.0 + steps[np.argsort(np.abs(steps))]))]:
        s = float(np.float32(s))
        lo_c = np.max(np.where(inner | (y >= high), y - 0.5 - s * q, -np.inf))
        hi_c = np.min(np.where(inner | (y <= low), y + 0.5 - s * q, np.inf))
        if lo_c <= hi_c:
            for c in ((lo_c + hi_c) / 2, lo_c, hi_c):
                yield s, float(np.float32(c))


@numba.njit(cache=True, inline="always")
def lookup_float(q, threshold, below, slope, offset, low, high):  # pragma: no cover - compiled
    """The arithmetic table of :func:`affine_lookup` on ``q`` (a float32 holding an integer)."""
    r = min(max(q * slope + offset, low), high)  # clamped before rounding: low/high are integers
    r = (r + _ROUND) - _ROUND
    return r if q >= threshold else below


@numba.njit(cache=True)
def _lookup_all(q, threshold, below, slope, offset, low, high):  # pragma: no cover - compiled
    out = np.empty_like(q)
    for i in range(q.shape[0]):
        out[i] = lookup_float(q[i], threshold, below, slope, offset, low, high)
    return out


@numba.njit(cache=True, inline="always")
def bounds(zp, relu, unsigned):  # pragma: no cover - compiled
    """(low, high, zero point) as float32 for the saturation (the low end is the zero point with ReLU)."""
    lo = np.float32(0 if unsigned else -128)
    hi = np.float32(255 if unsigned else 127)
    fzp = np.float32(zp)
    if relu:
        lo = max(lo, fzp)
    return lo, hi, fzp


@numba.njit(cache=True, inline="always")
def requant_one(a, b, m, lo, hi, fzp):  # pragma: no cover - compiled
    """One output: int32 ``a + b`` (bias in int32), float32 scale, rint, zero point, saturation.

    Saturated before rounding, which gives the same bytes in fewer operations: rounding is
    monotone and ``lo - zp``, ``hi - zp`` are integers, so ``rint(clamp(f, lo - zp, hi - zp)) + zp
    == clamp(rint(f) + zp, lo, hi)``, and the clamped value is small enough for ``_ROUND``.
    """
    f = min(max(np.float32(a + b) * m, lo - fzp), hi - fzp)
    return np.int32(((f + _ROUND) - _ROUND) + fzp)


@numba.njit(cache=True)
def requantize_into(out, acc, bias, mult, zp, relu, unsigned):  # pragma: no cover - compiled
    """out[j] = saturate(rint(float32(acc[j] + bias[j]) * mult[j]) + zp) for j < len(out)."""
    lo, hi, fzp = bounds(zp, relu, unsigned)
    for j in range(out.shape[0]):
        out[j] = requant_one(acc[j], bias[j], mult[j], lo, hi, fzp)


@numba.njit(cache=True)
def requantize_lookup_into(out, acc, bias, mult, zp, relu, unsigned, table):  # pragma: no cover - compiled
    """out[j] = table[requantized byte j] (see :func:`requantize_into`)."""
    lo, hi, fzp = bounds(zp, relu, unsigned)
    for j in range(out.shape[0]):
        out[j] = table[requant_one(acc[j], bias[j], mult[j], lo, hi, fzp) & 255]


@numba.njit(cache=True, inline="always")
def requant_float(a, b, m, lo, hi, fzp):  # pragma: no cover - compiled
    """:func:`requant_one` before the int conversion: the output as an exact float32 integer."""
    f = np.float32(np.int32(a + b)) * m  # the int32 sum MLAS forms (8 lanes wider as int64)
    f = min(max(f, lo - fzp), hi - fzp)
    return ((f + _ROUND) - _ROUND) + fzp


@numba.njit(cache=True)
def requantize_nchw(acc, out, bias, mult, zp, relu, unsigned, table, use_table, lookup):  # pragma: no cover
    """out (M, P) from pixel-major accumulators acc (P, Mp); ``table`` when ``use_table``.

    16 pixels at a time: their Mp accumulators are requantized to exact float32 integers by
    contiguous, vectorised loops into a (16, Mp) buffer, whose 16x16 blocks are transposed in
    registers and stored as 16 contiguous bytes per channel (:func:`transpose16_bytes`). A table
    with an arithmetic form (``lookup``, from :func:`affine_lookup`, all zeros when there is
    none) is applied in the vectorised loop; another is gathered from the stored bytes
    (scalar). Tiles of 16x16 with a column-strided scalar copy took 74 us per 128x28x28 conv
    (uint8, no table), this 34 us (table: 73 -> 58 us). A last partial block of pixels takes a
    scalar loop.
    """
    lo, hi, fzp = bounds(zp, relu, unsigned)
    arith = use_table and lookup[5] > lookup[4]
    thr, below, slope, offset, lo2, hi2 = lookup[0], lookup[1], lookup[2], lookup[3], lookup[4], lookup[5]
    npix, m, mp = acc.shape[0], out.shape[0], acc.shape[1]
    buf = np.empty((TILE, mp), np.float32)
    mfull = m - m % TILE
    pfull = npix - npix % TILE
    for p0 in range(0, pfull, TILE):
        for p in range(TILE):
            a, t = acc[p0 + p], buf[p]
            if arith:
                for j in range(mp):
                    t[j] = lookup_float(requant_float(a[j], bias[j], mult[j], lo, hi, fzp), thr, below, slope,
                                        offset, lo2, hi2)
            else:
                for j in range(mp):
                    t[j] = requant_float(a[j], bias[j], mult[j], lo, hi, fzp)
        for m0 in range(0, mfull, TILE):
            transpose16_bytes(buf, 0, m0, out, m0, p0)
        for j in range(mfull, m):  # channels of a last partial block
            for p in range(TILE):
                out[j, p0 + p] = np.int32(buf[p, j])
        if use_table and not arith:
            for j in range(m):
                row = out[j, p0:p0 + TILE]
                for p in range(TILE):
                    row[p] = table[np.int32(row[p]) & 255]
    for p in range(pfull, npix):
        a = acc[p]
        for j in range(m):
            q = requant_one(a[j], bias[j], mult[j], lo, hi, fzp)
            out[j, p] = table[q & 255] if use_table else q
