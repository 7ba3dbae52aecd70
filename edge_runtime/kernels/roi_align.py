"""RoiAlign's sampling loop: every RoI's bins from precomputed bilinear taps, onnxruntime's arithmetic.

The caller (:mod:`edge_runtime.ops.roi_align`) computes each axis's taps for all RoIs at once in
the input's float type: pixel indices ``(R, bins, grid, 2)``, weights ``(R, bins, grid, 2)`` and an
``outside`` mask ``(R, bins, grid)``. Per RoI this kernel first builds onnxruntime's ``pre_calc``
(each sample's four corner offsets and weights, the weights products of the two axes'), then
accumulates every bin over its samples as onnxruntime's ``RoiAlignForward`` does, per channel:

* ``avg`` adds ``w1*v1 + w2*v2 + w3*v3 + w4*v4`` per sample and divides by the sample count;
* ``max`` keeps ``std::max`` chains, ``a < b ? b : a``, over the corners and then the samples, so a
  NaN survives only where it comes first (a sample's low-low corner, a bin's first sample);
* a sample outside the map has weights 0 at offset 0: it reads ``0 * X[c, 0, 0]`` (a NaN spreads).

The map is read channels-last, so the channel loop is innermost and contiguous (SIMD lanes are
channels; each channel's operations and their order are onnxruntime's, so results are bit-equal).
Accumulation stays in the input's type, as onnxruntime's ``T output_val``.
"""
from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(cache=True, boundscheck=False, nogil=True, inline="always")
def _smax(a, b):  # pragma: no cover - compiled
    return b if a < b else a  # std::max: a NaN in `a` stays, one in `b` is skipped


@numba.njit(cache=True, boundscheck=False, nogil=True)
def _precalc(r, iy, wy, oy, ix, wx, ox, width, pos, w):  # pragma: no cover - compiled
    """RoI ``r``'s four corner offsets (into the H*W plane) and weights per sample, bin-major."""
    out_h, grid_h = iy.shape[1], iy.shape[2]
    out_w, grid_w = ix.shape[1], ix.shape[2]
    k = 0
    for ph in range(out_h):
        for pw in range(out_w):
            for sy in range(grid_h):
                for sx in range(grid_w):
                    if oy[r, ph, sy] or ox[r, pw, sx]:  # outside: weights 0 at offset 0
                        for j in range(4):
                            pos[k, j] = 0
                            w[k, j] = wy[r, ph, sy, 0] * 0
                    else:
                        y0, y1 = iy[r, ph, sy, 0] * width, iy[r, ph, sy, 1] * width
                        x0, x1 = ix[r, pw, sx, 0], ix[r, pw, sx, 1]
                        hy, ly = wy[r, ph, sy, 0], wy[r, ph, sy, 1]
                        hx, lx = wx[r, pw, sx, 0], wx[r, pw, sx, 1]
                        pos[k, 0], pos[k, 1], pos[k, 2], pos[k, 3] = y0 + x0, y0 + x1, y1 + x0, y1 + x1
                        w[k, 0], w[k, 1], w[k, 2], w[k, 3] = hy * hx, hy * lx, ly * hx, ly * lx
                    k += 1


@numba.njit(cache=True, boundscheck=False, nogil=True)
def _roi_align(x, width, batch, rows, iy, wy, oy, ix, wx, ox, is_max, zero, out):  # pragma: no cover
    channels, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    samples = iy.shape[2] * ix.shape[2]
    count = zero + samples
    pos = np.empty((out_h * out_w * samples, 4), np.int64)
    w = np.empty((out_h * out_w * samples, 4), wy.dtype)
    acc = np.empty(channels, out.dtype)
    for r in range(rows.size):
        _precalc(r, iy, wy, oy, ix, wx, ox, width, pos, w)
        xb = x[batch[r]]  # (H*W, C)
        k = 0
        for ph in range(out_h):
            for pw in range(out_w):
                for s in range(samples):
                    w1, w2, w3, w4 = w[k, 0], w[k, 1], w[k, 2], w[k, 3]
                    v1, v2, v3, v4 = xb[pos[k, 0]], xb[pos[k, 1]], xb[pos[k, 2]], xb[pos[k, 3]]
                    if is_max:
                        for c in range(channels):
                            val = _smax(_smax(_smax(w1 * v1[c], w2 * v2[c]), w3 * v3[c]), w4 * v4[c])
                            acc[c] = val if s == 0 else _smax(acc[c], val)
                    else:
                        if s == 0:
                            acc[:] = zero
                        for c in range(channels):
                            acc[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c]
                    k += 1
                for c in range(channels):
                    out[rows[r], c, ph, pw] = acc[c] if is_max else acc[c] / count


def roi_align_bins(x_hwc: NDArray, width: int, batch: NDArray, rows: NDArray, taps_y: tuple[NDArray, ...],
                   taps_x: tuple[NDArray, ...], is_max: bool, out: NDArray) -> None:
    """Fill ``out[rows]`` for RoIs sharing one sampling grid size per axis (grid >= 1 on both).

    Args:
        x_hwc: the feature map channels-last, (N, H*W, C) contiguous, float32 or float64.
        width: the map's W (the taps hold row and column indices).
        batch: (R,) image index of each RoI; rows: (R,) its row in ``out``.
        taps_y / taps_x: (indices (R, bins, grid, 2) int64, weights (R, bins, grid, 2) in the map's
            type, outside (R, bins, grid) bool) of each axis.
        is_max: ``mode="max"``, else ``avg``.
        out: (num_rois, C, out_h, out_w) in the map's dtype, written in place.
    """
    zero = np.zeros((), x_hwc.dtype)[()]
    _roi_align(x_hwc, int(width), np.ascontiguousarray(batch, np.int64), np.ascontiguousarray(rows, np.int64),
               *taps_y, *taps_x, bool(is_max), zero, out)
