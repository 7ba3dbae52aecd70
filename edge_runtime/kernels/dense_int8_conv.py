"""Dense int8 direct convolution for a small reduction (C*KH*KW <= :data:`MAX_REDUCTION`), NCHW in and out.

Public API::

    prepare_dense_int8_conv(W) -> PreparedDenseInt8Conv          # W (M, C, KH, KW) int8, once
    dense_conv_int8(x, x_zp, prepared, strides, pads, dilations, requant)   # (N, M, OH, OW) uint8/int8

For the first conv of a CNN (a 1- or 3-channel image: 9 or 27 products per output) there is
nothing to skip, and the zero-skipping kernel's per-pixel compaction, CSR walk and NHWC
transposes cost more than the products: on the 1-channel 28x28 -> 64 conv of the int8 FATReLU
CNN (docs/int8.md) it took 0.10 ms. Here the centred, zero-padded input (padding holds the
zero point, i.e. 0 after centring) is laid out as C*KH*KW float32 columns (with unit stride
each is one contiguous run of the padded image, see ``_columns``), the sums are one float32
GEMM ``W (M, K) @ cols (K, n)`` (BLAS: sgemm on every target), exact because every product
and partial sum is an integer below 2**24 (K <= 32, |x - zp| <= 255, |w| <= 128: at most
32*255*128 = 1,044,480), then requantized with the shared epilogue (bias added in int32,
float32 scale, round half to even, saturate, optional lookup table): exactly QLinearConv's
result. Tried first: an int32 tap loop in numba (acc += w * run, per tap), 1.8x slower.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels.geometry import conv2d_out
from edge_runtime.kernels.int8_epilogue import _ROUND, NO_LOOKUP, bounds, identity_table, lookup_float, requant_one
from edge_runtime.kernels.sparse_int8 import Requant

__all__ = ["MAX_REDUCTION", "PreparedDenseInt8Conv", "prepare_dense_int8_conv", "dense_conv_int8"]

#: Largest C*KH*KW this kernel is picked for: beyond it the zero-skipping kernel has work to skip.
MAX_REDUCTION = 32
_IDENTITY = {np.dtype(d): identity_table(d) for d in (np.uint8, np.int8)}


@dataclass(frozen=True)
class PreparedDenseInt8Conv:
    """Weights as float32 (M, C*KH*KW) (exact: int8 values) and the kernel's (C, KH, KW).

    Example:
        >>> prepare_dense_int8_conv(np.ones((8, 1, 3, 3), np.int8)).w.shape
        (8, 9)
    """

    w: NDArray[np.float32]
    c: int
    kh: int
    kw: int


def prepare_dense_int8_conv(w: ArrayLike) -> PreparedDenseInt8Conv:
    """Lay out (M, C, KH, KW) int8 weights once for :func:`dense_conv_int8`.

    Raises:
        InvalidArgumentError: not a 4-D int8 array, or C*KH*KW above :data:`MAX_REDUCTION`.
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.dtype != np.int8 or int(np.prod(w.shape[1:])) > MAX_REDUCTION:
        raise InvalidArgumentError(f"prepare_dense_int8_conv expects (M, C, KH, KW) int8 weights with C*KH*KW <= "
                                   f"{MAX_REDUCTION}, got {w.dtype} {w.shape}; use the zero-skipping int8 conv "
                                   f"(kernels.sparse_int8_conv) for larger reductions.")
    m, c, kh, kw = w.shape
    return PreparedDenseInt8Conv(np.ascontiguousarray(w.reshape(m, -1), np.float32), int(c), int(kh), int(kw))


@numba.njit(cache=True)
def _columns(x, zp, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):  # pragma: no cover - compiled
    """(C*KH*KW, n) float32 columns of one image x (C, H, W), centred (padding = 0), and the row pitch.

    Unit stride: tap rows are runs of the zero-padded input flattened with pitch ``wp`` (n =
    OH*wp; the columns past OW are computed and dropped by the epilogue); else pitch OW.
    """
    c, h, wd = x.shape
    hp = max(h + ph, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(wd + pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    xp = np.zeros(c * hp * wp + kw * dw, np.float32)  # + slack for the last run's dropped columns
    for ci in range(c):
        for i in range(h):
            row = xp[(ci * hp + i + ph) * wp + pw:]
            src = x[ci, i]
            for j in range(wd):
                row[j] = np.float32(np.int32(src[j]) - zp)
    pitch = wp if sw == 1 else ow
    cols = np.empty((c * kh * kw, oh * pitch), np.float32)
    for ci in range(c):
        for a in range(kh):
            for t in range(kw):
                dst = cols[(ci * kh + a) * kw + t]
                if sw == 1:
                    src = xp[(ci * hp + a * dh) * wp + t * dw:]
                    for k in range(oh * wp):
                        dst[k] = src[k]
                else:
                    for y in range(oh):
                        src = xp[(ci * hp + y * sh + a * dh) * wp + t * dw:]
                        d = dst[y * ow:]
                        for xo in range(ow):
                            d[xo] = src[xo * sw]
    return cols, pitch


@numba.njit(cache=True)
def _requant_planes(acc, pitch, out, bias, mult, yzp, relu, unsigned, table, use_table, lookup,
                    exact):  # pragma: no cover - compiled
    """out (M, OH, OW) from exact float32 sums acc (M, OH*pitch): + bias, scale, round, saturate, table.

    Each plane is requantized whole (its OH*pitch sums, the columns past OW included) into an
    int32 buffer by one vectorised loop, then its rows are narrowed to bytes. ``exact``: every
    ``sum + bias`` is an integer below 2**24, so it is added in float32 (the int32 sum
    converted to float32 is the same number); else through int32 (the float <-> int
    conversions kept it scalar: 37 us against 17 for the 64x28x28 first conv of the int8
    FATReLU CNN). A table is applied as arithmetic when it has that form (``lookup``, see
    :func:`edge_runtime.kernels.int8_epilogue.affine_lookup`), else gathered per byte.
    """
    lo, hi, fzp = bounds(yzp, relu, unsigned)
    arith = use_table and lookup[5] > lookup[4]
    thr, below, slope, offset, lo2, hi2 = lookup[0], lookup[1], lookup[2], lookup[3], lookup[4], lookup[5]
    m, oh, ow = out.shape
    n = oh * pitch
    q = np.empty(n, np.int32)
    for mi in range(m):
        b, f, a = bias[mi], mult[mi], acc[mi]
        fb = np.float32(b)
        if exact and arith:
            for k in range(n):
                q[k] = np.int32(lookup_float(_scaled(a[k] + fb, f, lo, hi, fzp), thr, below, slope, offset, lo2, hi2))
        elif exact:
            for k in range(n):
                q[k] = np.int32(_scaled(a[k] + fb, f, lo, hi, fzp))
        else:
            for k in range(n):
                q[k] = requant_one(np.int32(a[k]), b, f, lo, hi, fzp)
            if arith:
                for k in range(n):
                    q[k] = np.int32(lookup_float(np.float32(q[k]), thr, below, slope, offset, lo2, hi2))
        for y in range(oh):
            qrow, orow = q[y * pitch:], out[mi, y]
            if use_table and not arith:
                for xo in range(ow):
                    orow[xo] = table[qrow[xo] & 255]
            else:
                for xo in range(ow):
                    orow[xo] = qrow[xo]


@numba.njit(cache=True, inline="always")
def _scaled(s, f, lo, hi, fzp):  # pragma: no cover - compiled
    """:func:`requant_one` of an exact float32 sum (bias included), as a float32 integer."""
    v = min(max(s * f, lo - fzp), hi - fzp)  # saturated before rounding, as requant_one
    return ((v + _ROUND) - _ROUND) + fzp


def dense_conv_int8(x: NDArray, x_zero_point: int, prepared: PreparedDenseInt8Conv, strides: Sequence[int],
                    pads: Sequence[int], dilations: Sequence[int], requant: Requant,
                    out_hw: tuple[int, int] | None = None) -> NDArray:
    """QLinearConv's result for (N, C, H, W) uint8/int8 x, group 1: requantized (N, M, OH, OW).

    Args:
        x: (N, C, H, W) uint8/int8.
        x_zero_point: x's zero point (padding holds it).
        prepared: from :func:`prepare_dense_int8_conv`.
        strides, pads, dilations: ONNX order (pads: top, left, bottom, right).
        requant: the epilogue (:func:`edge_runtime.kernels.sparse_int8.requant_params`, its table if any).
        out_hw: (OH, OW) as :func:`edge_runtime.kernels.sparse_int8_conv.sparse_conv_int8` takes it.
    Raises:
        InvalidInputError: x's dtype/shape does not fit.
        InvalidArgumentError: bad strides/pads/dilations.
    """
    x = np.asarray(x)
    m, c, kh, kw = prepared.w.shape[0], prepared.c, prepared.kh, prepared.kw
    if x.dtype not in _IDENTITY:
        raise InvalidInputError(f"dense_conv_int8: x has dtype {x.dtype}; expected uint8/int8 to match the "
                                f"prepared weights.")
    oh, ow = out_hw or conv2d_out("dense_conv_int8", x.shape, c, (kh, kw), strides, pads, dilations)
    x = x if x.flags.c_contiguous else np.ascontiguousarray(x)
    table = requant.table if requant.table is not None else _IDENTITY[requant.dtype]
    out = np.empty((x.shape[0], m, oh, ow), requant.dtype)
    lookup = NO_LOOKUP if requant.lookup is None else requant.lookup
    exact = requant.bias_bound + prepared.w.shape[1] * 255 * 128 < 2 ** 24
    for i in range(x.shape[0]):
        cols, pitch = _columns(x[i], np.int32(x_zero_point), kh, kw, int(strides[0]), int(strides[1]),
                               int(dilations[0]), int(dilations[1]), int(pads[0]), int(pads[1]), oh, ow)
        acc = prepared.w @ cols  # (M, OH*pitch) float32 GEMM: exact, every partial sum is an integer < 2**24
        _requant_planes(acc, pitch, out[i], requant.bias, requant.multiplier, requant.zero_point, requant.relu,
                        requant.unsigned, table, requant.table is not None, lookup, exact)
    return out
