"""Zero-skipping int8 convolution (NCHW, any KxK, stride, padding, dilation; group 1) and 1x1 conv.

Public API::

    prepare_int8_conv(W) -> PreparedInt8Conv                 # W (M, C, KH, KW) int8, once
    sparse_conv_int8(x, x_zp, prepared, strides, pads, dilations, requant=None)
        -> (N, M, OH, OW) int32 accumulators, or requantized uint8/int8
    sparse_conv1x1_int8(x, x_zp, prepared_matmul, requant=None)   # 1x1, stride 1: token-batched MatMul

How (the fp32 design of sparse_conv.py, in int8): the input is laid out as pixel rows
(:func:`pixel_rows`), whose pixels are compacted once
into one CSR list of (channel, centred value) for the channels that differ from the zero
point (padding pixels have empty lists: they hold the zero point, i.e. real 0). Each
output pixel then walks the lists of its KH*KW input pixels (with unit dilation a kernel
row's pixels are one run of the list, see ``_runs``) and adds, per entry, one int8
weight row of M outputs (``Wt[(kh*KW + kw)*C + c, :]``) to int32 accumulators held in
registers across all runs (:data:`edge_runtime.kernels.sparse_int8.accumulate_taps_u8`; on
VNNI hosts from the list packed once as u8 values and byte offsets,
:mod:`edge_runtime.kernels.simd_int8_taps`, which VBMI2 hosts compact into directly,
:mod:`edge_runtime.kernels.simd_int8_compact`), then requantizes them straight into the NCHW
output in 16x16 tiles
(:func:`edge_runtime.kernels.int8_epilogue.requantize_nchw`; a QuantizedLookup folded into the
conv is applied there too, see ``Requant.table``). Cost ~ nnz(x) * KH*KW * M.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels.geometry import conv2d_out
from edge_runtime.kernels.simd_int8 import HAS_VNNI, dot_taps
from edge_runtime.kernels.simd_int8_compact import HAS_VBMI2, compress_packed64
from edge_runtime.kernels.simd_int8_taps import dot_taps_packed
from edge_runtime.kernels.sparse_common import aligned_empty
from edge_runtime.kernels.sparse_int8 import (PreparedInt8, Requant, accumulate_taps_mac, accumulate_taps_u8,
                                              check_int8_input, compact_append, sparse_matmul_int8)
from edge_runtime.kernels.int8_epilogue import NO_LOOKUP, identity_table, requantize_nchw
from edge_runtime.kernels.simd import transpose16_u8

__all__ = ["PreparedInt8Conv", "prepare_int8_conv", "sparse_conv_int8", "sparse_conv1x1_int8"]


_IDENTITY = {np.dtype(d): identity_table(d) for d in (np.uint8, np.int8)}  # unused when there is no table


@dataclass(frozen=True)
class PreparedInt8Conv:
    """Conv weights as rows ``Wt[(kh*KW + kw)*C + c, m]``, (KH*KW*C, Mp) int8, Mp = M rounded up to 16.

    Example:
        >>> p = prepare_int8_conv(np.ones((8, 4, 3, 3), dtype=np.int8))
        >>> (p.m, p.c, p.kh, p.kw, p.wt.shape)
        (8, 4, 3, 3, (36, 16))
    """

    wt: NDArray[np.int8]
    m: int
    c: int
    kh: int
    kw: int


def prepare_int8_conv(w: ArrayLike) -> PreparedInt8Conv:
    """Lay out (M, C, KH, KW) int8 conv weights once for :func:`sparse_conv_int8`.

    Raises:
        InvalidArgumentError: not a 4-D int8 array.
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.dtype != np.int8:
        raise InvalidArgumentError(f"prepare_int8_conv expects (M, C, KH, KW) int8 weights, got {w.dtype} "
                                   f"{w.shape}; quantize the weights to int8 (symmetric, zero point 0) first.")
    m, c, kh, kw = w.shape
    mp = max(16, -(-m // 16) * 16)
    wt = aligned_empty((kh * kw * c, mp), np.int8)  # 64-byte aligned: unaligned weight rows split every
    wt[:, m:] = 0                                     # zmm load over two cache lines (image loop +30%)
    wt[:, :m] = w.transpose(2, 3, 1, 0).reshape(kh * kw * c, m)
    return PreparedInt8Conv(wt, int(m), int(c), int(kh), int(kw))


@numba.njit(cache=True)
def pixel_rows(x, out):  # pragma: no cover - compiled
    """out (H*W, C) = x (C, H*W) transposed: a pixel's channels contiguous, for the compaction.

    16x16 byte blocks transposed in registers (:func:`edge_runtime.kernels.simd.transpose16_u8`),
    the edges scalar; 128x784 bytes: 6 us against numpy's 26 us (a scalar 16x16-tiled
    copy took 46 us).
    """
    c, p = x.shape
    cf, pf = c - c % 16, p - p % 16
    for p0 in range(0, pf, 16):
        for c0 in range(0, cf, 16):
            transpose16_u8(x, c0, p0, out, p0, c0)
    for q in range(pf):
        for k in range(cf, c):
            out[q, k] = x[k, q]
    for q in range(pf, p):
        for k in range(c):
            out[q, k] = x[k, q]


@numba.njit(cache=True)
def _compact_pixels(xt, zp, hp, wpad, ph, pw, ptr, vals, idx):  # pragma: no cover - compiled
    """CSR lists over the padded grid: pixel p's entries are ptr[p] <= i < ptr[p+1], with
    ``idx = padded column * C + channel`` (so a kernel row's taps are one run, see _conv_image).

    Returns:
        Whether every centred value is >= 0 (the VNNI path may run).
    """
    h, w, c = xt.shape
    n = 0
    lo = 0
    for ih in range(hp):
        for iw in range(wpad):
            ptr[ih * wpad + iw] = n
            y, x = ih - ph, iw - pw
            if 0 <= y < h and 0 <= x < w:
                n, low = compact_append(xt[y, x], zp, vals, idx, n, iw * c)
                lo = min(lo, low)
    ptr[hp * wpad] = n
    return lo >= 0


@numba.njit(cache=True)
def _compact_pixels_packed(xt, zp, hp, wpad, ph, pw, ptr, vb, off, rs):  # pragma: no cover - compiled
    """:func:`_compact_pixels` written straight in the VNNI path's packed form: ``vb`` the bytes
    ``x - zp``, ``off = idx * rs`` the byte offsets of the entries' weight rows (VBMI2 hosts).

    64 channels per :func:`edge_runtime.kernels.simd_int8_compact.compress_packed64`; a pixel's
    last partial chunk is the 64 bytes ending at its last channel, the lanes already done
    skipped; pixels of fewer than 64 channels are scalar. One flat view of ``xt`` and no calls
    inside the loops: with a per-pixel row view (``xt[y, x]``) passed to a helper, the assembly
    had 6 NRT reference-count calls per pixel, and this compaction took 34 us instead of 11 us
    for 28x28x128 at 90% sparsity.

    Returns:
        Whether every centred value is >= 0; else ``vb`` holds values modulo 256 (not usable).
    """
    h, w, c = xt.shape
    xf = xt.reshape(h * w * c)
    n = 0
    below = 0
    tail = c % 64
    for ih in range(hp):
        for iw in range(wpad):
            ptr[ih * wpad + iw] = n
            y, x = ih - ph, iw - pw
            if not (0 <= y < h and 0 <= x < w):
                continue
            p0 = (y * w + x) * c
            obase = iw * c * rs
            if c < 64:
                for k in range(c):
                    v = np.int32(xf[p0 + k]) - zp
                    vb[n] = np.uint8(v & 255)
                    off[n] = obase + k * rs
                    n += v != 0
                    if v < 0:
                        below = 1
                continue
            for q in range(0, c - 63, 64):
                n, low = compress_packed64(xf, p0 + q, 0, zp, vb, off, n, obase + q * rs, rs)
                below |= low
            if tail:
                q = c - 64
                n, low = compress_packed64(xf, p0 + q, 64 - tail, zp, vb, off, n, obase + q * rs, rs)
                below |= low
    ptr[hp * wpad] = n
    return below == 0


@numba.njit(cache=True, inline="always")
def _runs(y, x, kh, kw, sh, sw, dh, dw, wpad, c, tlo, thi, tbase):  # pragma: no cover - compiled
    """Output pixel (y, x)'s runs of the packed list; returns their count.

    Entry ``idx = iw * C + c`` of input column iw meets weight row ``(a*KW + b)*C + c`` at
    tap (a, b) of output column x, iw = x*sw + b*dw: the row is ``idx + ((a*KW + b) - iw)*C``.
    With dw == 1 that offset is the same for a whole kernel row, whose KW pixels are
    consecutive in the list: one run per kernel row, no copying.
    """
    t = 0
    for a in range(kh):
        pix = (y * sh + a * dh) * wpad + x * sw
        if dw == 1:
            tlo[t], thi[t], tbase[t] = pix, pix + kw, (a * kw - x * sw) * c
            t += 1
        else:
            for b in range(kw):
                tlo[t], thi[t] = pix + b * dw, pix + b * dw + 1
                tbase[t] = ((a * kw + b) - (x * sw + b * dw)) * c
                t += 1
    return t


@numba.njit(cache=True)
def _pixels_portable(out_acc, wt, vals, idx, ptr, u8, geom, tlo, thi, tbase):  # pragma: no cover - compiled
    """Every output pixel's accumulators (hosts without VNNI): udot quads or the widening multiply-add."""
    kh, kw, sh, sw, dh, dw, wpad, c, oh, ow = geom
    for y in range(oh):
        for x in range(ow):
            runs = _runs(y, x, kh, kw, sh, sw, dh, dw, wpad, c, tlo, thi, tbase)
            acc = out_acc[y * ow + x]
            acc[:] = 0
            if u8:
                accumulate_taps_u8(acc, wt, vals, idx, ptr, tlo, thi, tbase, runs)
            else:
                accumulate_taps_mac(acc, wt, vals, idx, ptr, tlo, thi, tbase, runs)


@numba.njit(cache=True)
def _pixels_vnni(out_acc, wt, vals, idx, ptr, u8, geom, tlo, thi, tbase):  # pragma: no cover - compiled
    """Every output pixel's accumulators on a VNNI host: the list packed once as u8 values and
    byte offsets (:mod:`edge_runtime.kernels.simd_int8_taps`), then :func:`_pixels_packed`."""
    if not u8:
        _pixels_portable(out_acc, wt, vals, idx, ptr, u8, geom, tlo, thi, tbase)
        return
    nnz = ptr[ptr.shape[0] - 1]
    vb = np.zeros(nnz + 4, np.uint8)  # 3 readable bytes past the last entry
    off = np.empty(nnz, np.int32)
    rs = wt.shape[1]  # the row stride in bytes
    for i in range(nnz):
        vb[i] = vals[i]
        off[i] = idx[i] * rs
    _pixels_packed(out_acc, wt, vb, off, vals, idx, ptr, geom, tlo, thi, tbase)


@numba.njit(cache=True)
def _pixels_packed(out_acc, wt, vb, off, vals, idx, ptr, geom, tlo, thi, tbase):  # pragma: no cover - compiled
    """Every output pixel's accumulators from the packed list (``vb``, ``off``): 64-output chunks
    through :func:`dot_taps_packed`, a 16-48 output remainder from ``vals``/``idx`` (only read
    then). The intrinsics inline (a numba call per pixel passing ten arrays cost ~60 ns)."""
    kh, kw, sh, sw, dh, dw, wpad, c, oh, ow = geom
    t = out_acc.shape[1]
    n128 = t - t % 128
    rem = (t - n128) // 16
    for y in range(oh):
        for x in range(ow):
            runs = _runs(y, x, kh, kw, sh, sw, dh, dw, wpad, c, tlo, thi, tbase)
            acc = out_acc[y * ow + x]
            acc[:] = 0
            for n0 in range(0, n128, 128):
                dot_taps_packed(acc, wt, vb, off, ptr, tlo, thi, tbase, runs, n0, 8)
            nb = n128
            if rem >= 4:
                dot_taps_packed(acc, wt, vb, off, ptr, tlo, thi, tbase, runs, nb, 4)
                nb += 64
            r = rem % 4
            if r == 1:
                dot_taps(acc, wt, vals, idx, ptr, tlo, thi, tbase, runs, nb, 1)
            elif r == 2:
                dot_taps(acc, wt, vals, idx, ptr, tlo, thi, tbase, runs, nb, 2)
            elif r == 3:
                dot_taps(acc, wt, vals, idx, ptr, tlo, thi, tbase, runs, nb, 3)


#: Chosen once per host, so a host never compiles the other's instructions.
_pixels = _pixels_vnni if HAS_VNNI else _pixels_portable


@numba.njit(cache=True, inline="always")
def _grid(h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):  # pragma: no cover - compiled
    """(padded rows, padded columns, runs per output pixel) of an image's CSR lists."""
    hp = max(h + ph, (oh - 1) * sh + (kh - 1) * dh + 1)
    wpad = max(w + pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    return hp, wpad, kh if dw == 1 else kh * kw


@numba.njit(cache=True)
def _conv_image_list(xt, zp, wt, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, out_acc):  # pragma: no cover - compiled
    """int32 accumulators (OH*OW, Mp) of one image (xt is (H, W, C)); see :func:`_runs`."""
    h, w, c = xt.shape
    hp, wpad, runs = _grid(h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)
    ptr = np.empty(hp * wpad + 1, np.int64)
    vals = np.empty(h * w * c, np.int32)
    idx = np.empty(h * w * c, np.int32)
    u8 = _compact_pixels(xt, zp, hp, wpad, ph, pw, ptr, vals, idx)
    tlo, thi, tbase = np.empty(runs, np.int64), np.empty(runs, np.int64), np.empty(runs, np.int64)
    _pixels(out_acc, wt, vals, idx, ptr, u8, (kh, kw, sh, sw, dh, dw, wpad, c, oh, ow), tlo, thi, tbase)


@numba.njit(cache=True)
def _conv_image_vbmi2(xt, zp, wt, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, out_acc):  # pragma: no cover - compiled
    """:func:`_conv_image_list` on VBMI2 hosts: compacted straight into the packed list
    (:func:`_compact_pixels_packed`, no int32 list and no packing pass); an image with inputs
    below the zero point (not the VNNI case) is redone by :func:`_conv_image_list`."""
    h, w, c = xt.shape
    hp, wpad, runs = _grid(h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)
    ptr = np.empty(hp * wpad + 1, np.int64)
    vb = np.empty(h * w * c + 64, np.uint8)  # full-width compress stores: 64 slots of room
    off = np.empty(h * w * c + 64, np.int32)
    rs = wt.shape[1]
    if not _compact_pixels_packed(xt, zp, hp, wpad, ph, pw, ptr, vb, off, rs):
        _conv_image_list(xt, zp, wt, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, out_acc)
        return
    nnz = ptr[ptr.shape[0] - 1] if rs % 64 else 0  # the 16-48 output remainder reads vals/idx
    vals, idx = np.empty(nnz, np.int32), np.empty(nnz, np.int32)
    for i in range(nnz):
        vals[i] = vb[i]
        idx[i] = off[i] // rs
    tlo, thi, tbase = np.empty(runs, np.int64), np.empty(runs, np.int64), np.empty(runs, np.int64)
    _pixels_packed(out_acc, wt, vb, off, vals, idx, ptr, (kh, kw, sh, sw, dh, dw, wpad, c, oh, ow), tlo, thi, tbase)


#: Chosen once per host (VBMI2 implies VNNI here, see simd_int8_compact.host_has_vbmi2).
_conv_image = _conv_image_vbmi2 if HAS_VBMI2 else _conv_image_list


def sparse_conv_int8(x: NDArray, x_zero_point: int, prepared: PreparedInt8Conv, strides: Sequence[int] = (1, 1),
                     pads: Sequence[int] = (0, 0, 0, 0), dilations: Sequence[int] = (1, 1),
                     requant: Requant | None = None, out_hw: tuple[int, int] | None = None) -> NDArray:
    """``conv(x - x_zp, W)`` skipping input entries equal to ``x_zp``; int32 or requantized (N, M, OH, OW).

    Args:
        x: (N, C, H, W) uint8/int8.
        x_zero_point: x's zero point (padding holds it, as in QLinearConv).
        prepared: from :func:`prepare_int8_conv`.
        strides, pads, dilations: ONNX order (pads: top, left, bottom, right).
        requant: the epilogue (:func:`edge_runtime.kernels.sparse_int8.requant_params`, with its
            lookup table if any), or None for the int32 accumulators.
        out_hw: (OH, OW) from :func:`edge_runtime.kernels.geometry.conv2d_out` on this x's shape
            and geometry, by a caller that checked them once (a plan's runner); else checked here.
    Raises:
        InvalidInputError: x's dtype/shape does not fit.
        InvalidArgumentError: bad strides/pads/dilations.
    """
    x = np.asarray(x)
    oh, ow = out_hw or conv2d_out("sparse_conv_int8", x.shape, prepared.c, (prepared.kh, prepared.kw), strides, pads,
                                  dilations)
    x = check_int8_input(x, x_zero_point, x.shape[-1], 4, "sparse_conv_int8")
    n, mp = x.shape[0], prepared.wt.shape[1]
    acc = np.empty((oh * ow, mp), np.int32)
    table = None if requant is None else requant.table if requant.table is not None else _IDENTITY[requant.dtype]
    out = np.empty((n, prepared.m, oh, ow), np.int32 if requant is None else requant.dtype)
    xt = np.empty((x.shape[2], x.shape[3], x.shape[1]), x.dtype)
    for i in range(n):
        pixel_rows(x[i].reshape(x.shape[1], -1), xt.reshape(-1, x.shape[1]))  # (H, W, C)
        _conv_image(xt, np.int32(x_zero_point), prepared.wt, prepared.kh, prepared.kw, int(strides[0]),
                    int(strides[1]), int(dilations[0]), int(dilations[1]), int(pads[0]), int(pads[1]), oh, ow, acc)
        if requant is None:
            out[i] = acc[:, :prepared.m].T.reshape(prepared.m, oh, ow)
        else:
            requantize_nchw(acc, out[i].reshape(prepared.m, oh * ow), requant.bias, requant.multiplier,
                            requant.zero_point, requant.relu, requant.unsigned, table, requant.table is not None,
                            NO_LOOKUP if requant.lookup is None else requant.lookup)
    return out


def sparse_conv1x1_int8(x: NDArray, x_zero_point: int, prepared: PreparedInt8,
                        requant: Requant | None = None) -> NDArray:
    """1x1 stride-1 conv of (N, C, H, W) as the token-batched MatMul over pixels; (N, M, H, W).

    ``prepared`` holds the (C, M) weights: ``prepare_int8_weights(W[:, :, 0, 0].T)``.

    Raises:
        InvalidInputError: x's dtype/shape does not fit.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise InvalidInputError(f"sparse_conv1x1_int8: x has shape {x.shape}; expected (N, C, H, W).")
    n, c, h, w = x.shape
    rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * h * w, c)  # pixels as rows
    y = sparse_matmul_int8(rows, x_zero_point, prepared, requant)  # (N*H*W, M)
    return np.ascontiguousarray(y.reshape(n, h, w, prepared.n).transpose(0, 3, 1, 2))
