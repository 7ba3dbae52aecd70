"""Depthwise 2-D convolution (group == C_in == C_out) in numba, with fused epilogue.

numpy has no good formulation of a depthwise conv (im2col + batched matmul of
1 x k*k by k*k x HW is memory bound and slow), so this is a direct loop: each
channel is copied into a zero-bordered plane (split into its sh x sw stride phases for
strided convs: even/odd rows and columns for stride 2), so output pixel (oh, ow) at flat
position oh * Wq + ow reads each tap at a constant offset of one flat buffer. The taps are
summed in registers by :func:`edge_runtime.kernels.direct_conv.conv_tile` (one channel, 4
vectors of 16 positions per tile), then the bias and activation run over the channel and
its valid columns are copied out. Whole planes as one flat vector beat per-row loops at
14x14 and 7x7 (rows too short to vectorise); the tiles replaced one pass over an
accumulator per tap: 0.47-0.88x the time on MobileNetV2's depthwise shapes
(docs/dense_kernels.md).

API::

    depthwise_conv2d(x, w, bias, strides, pads, dilations, act, p0, p1) -> y
        x (N, C, H, W) float32 C-contiguous; w (C, kh, kw); bias (C,) or None;
        pads (top, left, bottom, right).
"""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
from numba import uint64 as u64
from numpy.typing import NDArray

from edge_runtime.kernels.activation import act_inplace
from edge_runtime.kernels.direct_conv import conv_tile, tap_offsets
from edge_runtime.kernels.fastmath import FAST
from edge_runtime.kernels.geometry import conv_out_spatial


@numba.njit(cache=True, inline="always")
def valid_range(off: int, stride: int, size: int, n_out: int) -> tuple[int, int]:
    """Output indices o in [lo, hi) with 0 <= o*stride + off < size."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    if size - 1 - off < 0:
        return lo, lo
    hi = min(n_out, (size - 1 - off) // stride + 1)
    return lo, max(lo, hi)


@numba.njit(cache=True, fastmath=FAST, boundscheck=False)
def _fill_phases(src, xph, row, sh, sw, ph, pw):  # pragma: no cover (numba)
    # Scatter one (H, W) channel into its stride phases: padded pixel (hh, tt) goes to
    # xph[hh % sh, tt % sw, hh // sh, tt // sw]. Each input row is copied into ``row`` (zero
    # outside [pw, pw + W), at least wq * sw long) and dealt out to its column phases: for
    # stride 2 one interleaved load pair per two outputs, where a strided read of the input
    # row compiled to a gather. Padding rows are never written (zero).
    hgt, wid = src.shape
    wq = xph.shape[3]
    for h in range(hgt):
        hh = ph + h
        a, i = hh % sh, hh // sh
        r = src[h]
        for t in range(wid):
            row[u64(pw + t)] = r[u64(t)]
        if sw == 2:
            d0 = xph[a, 0, i]
            d1 = xph[a, 1, i]
            for j in range(wq):
                d0[u64(j)] = row[u64(2 * j)]
                d1[u64(j)] = row[u64(2 * j + 1)]
        else:
            for b in range(sw):
                d = xph[a, b, i]
                for j in range(wq):
                    d[u64(j)] = row[u64(j * sw + b)]


#: Vectors of 16 positions per depthwise tile (4 accumulators: 4 zmm, 8 ymm or 16 NEON q registers).
_DW_VECTORS = 4
_DW_TILE = 16 * _DW_VECTORS


@numba.njit(cache=True, fastmath=FAST, boundscheck=False)
def _dw2d(x, w3, bias, y, sh, sw, ph, pw, dh, dw, kh, kw, act, p0, p1):  # pragma: no cover (numba)
    # Each channel is copied into a zero-bordered plane (split into its sh x sw stride phases
    # when strided); tap (i, j) then reads phase ((i*dh) % sh, (j*dw) % sw) at a constant flat
    # offset, output (oh, ow) sitting at oh * wq + ow: the Wq - Wout junk columns per row are
    # computed and dropped. Indices are unsigned so numba emits no wraparound test.
    n_img, ch, hgt, wid = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    hp = max(ph + hgt, (oh_n - 1) * sh + (kh - 1) * dh + 1)
    wp = max(pw + wid, (ow_n - 1) * sw + (kw - 1) * dw + 1)
    hq, wq = (hp + sh - 1) // sh, (wp + sw - 1) // sw
    plane = hq * wq
    m = (oh_n - 1) * wq + ow_n
    mpad = (m + _DW_TILE - 1) // _DW_TILE * _DW_TILE
    xoff = tap_offsets(kh, kw, sh, sw, dh, dw, 1, hq, wq)  # one channel's (sh, sw, hq, wq) planes
    # the tiles read up to mpad past each tap's offset: zeros past the planes
    xbuf = np.zeros(max(sh * sw * plane, xoff.max() + mpad), np.float32)
    xph = xbuf[:sh * sw * plane].reshape(sh, sw, hq, wq)
    xp = xph[0, 0]
    acc = np.empty(mpad, np.float32)
    prow = np.zeros(wq * sw, np.float32)  # _fill_phases' padded input row
    for n in range(n_img):
        for c in range(ch):
            if sh == 1 and sw == 1:
                for h in range(hgt):
                    src = x[n, c, h]
                    dst = xp[ph + h]
                    for t in range(wid):
                        dst[u64(pw + t)] = src[u64(t)]
            else:
                _fill_phases(x[n, c], xph, prow, sh, sw, ph, pw)
            for q0 in range(0, mpad, _DW_TILE):  # acc[q] = sum_t w[c, t] * xbuf[xoff[t] + q]
                conv_tile(acc, w3, xbuf, xoff, kh * kw, c, q0, 0, 1, _DW_VECTORS)
            b = bias[c]
            for k in range(m):
                acc[u64(k)] += b
            if act != 0:
                act_inplace(acc[:m], act, p0, p1)  # junk columns too: one long vector beats short rows
            out = y[n, c]
            for oh in range(oh_n):
                row = out[oh]
                for ow in range(ow_n):
                    row[u64(ow)] = acc[u64(oh * wq + ow)]


def depthwise_conv2d(x: NDArray[np.float32], w: NDArray[np.float32], bias: NDArray[np.float32] | None,
                     strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
                     act: int = 0, p0: float = 0.0, p1: float = 0.0) -> NDArray[np.float32]:
    """Depthwise conv with bias and fused activation.

    Args:
        x: (N, C, H, W) float32 input.
        w: (C, kh, kw) float32 filters (ONNX's (C, 1, kh, kw) with the 1 dropped).
        bias: (C,) or None.
        strides, dilations: (sh, sw), (dh, dw).
        pads: (top, left, bottom, right).
        act, p0, p1: fused activation (kernels/activation.py codes).

    Returns:
        (N, C, OH, OW) float32.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    ch = x.shape[1]
    oh, ow = conv_out_spatial(x.shape[2:], w.shape[1:], strides, dilations, pads)
    y = np.empty((x.shape[0], ch, oh, ow), np.float32)
    b = np.zeros(ch, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    kh, kw = int(w.shape[1]), int(w.shape[2])
    w3 = np.ascontiguousarray(w, dtype=np.float32).reshape(ch, kh * kw, 1)
    _dw2d(x, w3, b, y, int(strides[0]), int(strides[1]), int(pads[0]), int(pads[1]),
          int(dilations[0]), int(dilations[1]), kh, kw, int(act), float(p0), float(p1))
    return y
