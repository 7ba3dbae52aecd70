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

import numba
import numpy as np

from edge_runtime.kernels.simd import transpose16_bytes

__all__ = ["requantize_into", "requantize_nchw", "identity_table"]

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
    """One output: int32 ``a + b`` (bias in int32), float32 scale, rint, zero point, saturation."""
    f = np.float32(a + b) * m
    f = min(max(f, np.float32(-4e6)), np.float32(4e6))  # far outside any 8-bit range, inside 2**22
    q = ((f + _ROUND) - _ROUND) + fzp
    return np.int32(min(max(q, lo), hi))


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
    f = min(max(f, np.float32(-4e6)), np.float32(4e6))
    q = ((f + _ROUND) - _ROUND) + fzp
    return min(max(q, lo), hi)


@numba.njit(cache=True)
def requantize_nchw(acc, out, bias, mult, zp, relu, unsigned, table, use_table):  # pragma: no cover - compiled
    """out (M, P) from pixel-major accumulators acc (P, Mp); ``table`` when ``use_table``.

    16 pixels at a time: their Mp accumulators are requantized to exact float32 integers by
    contiguous, vectorised loops into a (16, Mp) buffer, whose 16x16 blocks are transposed in
    registers and stored as 16 contiguous bytes per channel (:func:`transpose16_bytes`); a table
    is then applied to those bytes (scalar). Tiles of 16x16 with a column-strided scalar copy
    took 74 us per 128x28x28 conv (uint8, no table), this 34 us (table: 73 -> 58 us). A last
    partial block of pixels takes a scalar loop.
    """
    lo, hi, fzp = bounds(zp, relu, unsigned)
    npix, m, mp = acc.shape[0], out.shape[0], acc.shape[1]
    buf = np.empty((TILE, mp), np.float32)
    mfull = m - m % TILE
    pfull = npix - npix % TILE
    for p0 in range(0, pfull, TILE):
        for p in range(TILE):
            a, t = acc[p0 + p], buf[p]
            for j in range(mp):
                t[j] = requant_float(a[j], bias[j], mult[j], lo, hi, fzp)
        for m0 in range(0, mfull, TILE):
            transpose16_bytes(buf, 0, m0, out, m0, p0)
        for j in range(mfull, m):  # channels of a last partial block
            for p in range(TILE):
                out[j, p0 + p] = np.int32(buf[p, j])
        if use_table:
            for j in range(m):
                row = out[j, p0:p0 + TILE]
                for p in range(TILE):
                    row[p] = table[np.int32(row[p]) & 255]
    for p in range(pfull, npix):
        a = acc[p]
        for j in range(m):
            q = requant_one(a[j], bias[j], mult[j], lo, hi, fzp)
            out[j, p] = table[q & 255] if use_table else q
