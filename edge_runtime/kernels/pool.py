"""Max and average pooling: numba loops for 1-D/2-D, numpy taps for 3-D.

API::

    y, idx = max_pool(x, kernel, strides, pads, dilations, ceil_mode, want_indices, storage_order)
    y = avg_pool(x, kernel, strides, pads, dilations, ceil_mode, count_include_pad)

``pads`` are explicit ONNX pads (begins then ends; resolve ``auto_pad`` first).
Windows never read padding: max ignores it, average divides by the number of real
pixels (``count_include_pad=0``) or of pixels inside the padded input
(``count_include_pad=1``; a ceil_mode window that runs past the end padding counts
only up to it), which is the rule of onnx's reference evaluator and of torch.
MaxPool indices are flat offsets into the whole (N, C, *spatial) input, row-major
(``storage_order=0``) or with the last two spatial axes column-major (``=1``).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numba
import numpy as np
from numpy.typing import NDArray

from edge_runtime.kernels.fastmath import FAST
from edge_runtime.kernels.geometry import conv_out_spatial


@numba.njit(cache=True, fastmath=False)
def _max2d(x, y, idx, want_idx, col_major, kh, kw, sh, sw, ph, pw, dh, dw):  # pragma: no cover
    planes, hgt, wid = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    for p in range(planes):
        for oh in range(oh_n):
            h0 = oh * sh - ph
            for ow in range(ow_n):
                w0 = ow * sw - pw
                best = -np.inf
                arg = -1
                for i in range(kh):
                    h = h0 + i * dh
                    if h < 0 or h >= hgt:
                        continue
                    for j in range(kw):
                        w = w0 + j * dw
                        if w < 0 or w >= wid:
                            continue
                        v = x[p, h, w]
                        if v > best or arg < 0 or (v != v and best == best):  # NaN wins, as in torch
                            best = v
                            arg = w * hgt + h if col_major else h * wid + w
                y[p, oh, ow] = best
                if want_idx:
                    idx[p, oh, ow] = p * hgt * wid + arg


@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _row_max(dst, src):  # pragma: no cover
    """dst = max(dst, src) elementwise (same length), NaN if either is; vectorises as max/blend."""
    for k in range(dst.shape[0]):
        a = src[k]
        b = dst[k]
        dst[k] = a if (a > b or a != a) else b


@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _max2d_values(x, y, kh, kw, sh, sw, ph, pw, dh, dw):  # pragma: no cover
    """Separable max (no indices): rows of a window into a -inf padded line, then columns."""
    planes, hgt, wid = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    tw = (ow_n - 1) * sw + (kw - 1) * dw + 1
    buf = np.empty(max(tw, pw + wid), np.float32)
    n_in = max(0, min(wid, tw - pw))
    for p in range(planes):
        for oh in range(oh_n):
            h0 = oh * sh - ph
            buf[:] = -np.inf
            line = buf[pw:pw + n_in]
            for i in range(kh):
                h = h0 + i * dh
                if 0 <= h < hgt:
                    _row_max(line, x[p, h, :n_in])
            out = y[p, oh]
            for ow in range(ow_n):
                out[ow] = buf[ow * sw]
            for j in range(1, kw):
                _row_max(out, buf[j * dw:j * dw + (ow_n - 1) * sw + 1:sw])
    return y


@numba.njit(cache=True, fastmath=False, error_model="numpy")
def _pool_counts(n_out, s, k, d, p0, size, pe, include_pad):  # pragma: no cover
    """Taps per output position along one axis that the average divides by."""
    cnt = np.zeros(n_out, np.float32)
    lo = -p0 if include_pad else 0
    hi = size + pe if include_pad else size
    for o in range(n_out):
        for i in range(k):
            h = o * s - p0 + i * d
            if lo <= h < hi:
                cnt[o] += 1.0
    return cnt


@numba.njit(cache=True, fastmath=FAST, error_model="numpy")
def _avg2d(x, y, include_pad, kh, kw, sh, sw, ph, pw, pe_h, pe_w, dh, dw):  # pragma: no cover
    """Separable average: rows into a zero padded line, then columns, then / counts."""
    planes, hgt, wid = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    ch = _pool_counts(oh_n, sh, kh, dh, ph, hgt, pe_h, include_pad)
    cw = _pool_counts(ow_n, sw, kw, dw, pw, wid, pe_w, include_pad)
    tw = (ow_n - 1) * sw + (kw - 1) * dw + 1
    buf = np.zeros(max(tw, pw + wid), np.float32)
    n_in = max(0, min(wid, tw - pw))
    for p in range(planes):
        for oh in range(oh_n):
            h0 = oh * sh - ph
            line = buf[pw:pw + n_in]
            line[:] = 0.0
            for i in range(kh):
                h = h0 + i * dh
                if 0 <= h < hgt:
                    src = x[p, h]
                    for k in range(n_in):
                        line[k] += src[k]
            out = y[p, oh]
            out[:] = 0.0
            for j in range(kw):
                col = buf[j * dw:j * dw + (ow_n - 1) * sw + 1:sw]
                for ow in range(ow_n):
                    out[ow] += col[ow]
            for ow in range(ow_n):
                c = ch[oh] * cw[ow]
                out[ow] = out[ow] / c if c > 0 else 0.0
    return y


def _as_planes(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """(N, C, *sp) -> (N*C, H, W) view; 1-D inputs get H = 1."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 3:
        return x.reshape(-1, 1, x.shape[2])
    return x.reshape(-1, x.shape[2], x.shape[3])


def _params_2d(kernel, strides, pads, dilations):
    """Pad 1-D parameters to the 2-D kernels' (h, w) form."""
    if len(kernel) == 1:
        return [1, kernel[0]], [1, strides[0]], [0, pads[0], 0, pads[1]], [1, dilations[0]]
    return list(kernel), list(strides), list(pads), list(dilations)


def max_pool(x: NDArray[np.float32], kernel: Sequence[int], strides: Sequence[int],
             pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool = False,
             want_indices: bool = False, storage_order: int = 0
             ) -> tuple[NDArray[np.float32], NDArray[np.int64] | None]:
    """Max pooling over 1, 2 or 3 spatial dims.

    Args:
        x: (N, C, *spatial) float32.
        kernel, strides, dilations: per spatial dim.
        pads: explicit begins-then-ends pads.
        ceil_mode: round the output size up.
        want_indices: also return the argmax indices (int64, flat into x).
        storage_order: 0 row-major indices, 1 column-major.

    Returns:
        (y, indices or None).
    """
    out_sp = conv_out_spatial(x.shape[2:], kernel, strides, dilations, pads, ceil_mode)
    if x.ndim > 4:
        return _max_nd(x, kernel, strides, pads, dilations, out_sp, want_indices, storage_order)
    k2, s2, p2, d2 = _params_2d(kernel, strides, pads, dilations)
    planes = _as_planes(x)
    oh = 1 if x.ndim == 3 else out_sp[0]
    y = np.empty((planes.shape[0], oh, out_sp[-1]), np.float32)
    if not want_indices:
        _max2d_values(planes, y, k2[0], k2[1], s2[0], s2[1], p2[0], p2[1], d2[0], d2[1])
        return y.reshape((*x.shape[:2], *out_sp)), None
    idx = np.empty(y.shape, np.int64)
    _max2d(planes, y, idx, want_indices, storage_order == 1 and x.ndim == 4, k2[0], k2[1], s2[0], s2[1],
           p2[0], p2[1], d2[0], d2[1])
    shape = (*x.shape[:2], *out_sp)
    return y.reshape(shape), (idx.reshape(shape) if want_indices else None)


def avg_pool(x: NDArray[np.float32], kernel: Sequence[int], strides: Sequence[int],
             pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool = False,
             count_include_pad: bool = False) -> NDArray[np.float32]:
    """Average pooling over 1, 2 or 3 spatial dims (see module docstring for the divisor).

    Returns:
        (N, C, *out_spatial) float32.
    """
    out_sp = conv_out_spatial(x.shape[2:], kernel, strides, dilations, pads, ceil_mode)
    if x.ndim > 4:
        return _avg_nd(x, kernel, strides, pads, dilations, out_sp, count_include_pad)
    k2, s2, p2, d2 = _params_2d(kernel, strides, pads, dilations)
    planes = _as_planes(x)
    oh = 1 if x.ndim == 3 else out_sp[0]
    y = np.empty((planes.shape[0], oh, out_sp[-1]), np.float32)
    _avg2d(planes, y, bool(count_include_pad), k2[0], k2[1], s2[0], s2[1], p2[0], p2[1], p2[2], p2[3],
           d2[0], d2[1])
    return y.reshape((*x.shape[:2], *out_sp))


def _tap_views(xp, kernel, strides, dilations, out_sp):
    """Yield (tap, strided view of the padded input) for each kernel offset."""
    for tap in itertools.product(*[range(k) for k in kernel]):
        sl = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                   for o, d, n, s in zip(tap, dilations, out_sp, strides))
        yield tap, xp[(slice(None), slice(None)) + sl]


def _padded(x, kernel, strides, pads, dilations, out_sp, fill):
    """x padded with ``fill`` to cover every window, plus its begin pads."""
    nd = len(kernel)
    widths = [(0, 0), (0, 0)]
    for i in range(nd):
        need = (out_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        widths.append((pads[i], max(0, need - x.shape[2 + i] - pads[i])))
    return np.pad(np.asarray(x, np.float32), widths, constant_values=fill)


def _max_nd(x, kernel, strides, pads, dilations, out_sp, want_indices, storage_order):
    """numpy max pooling for any rank (used for 3-D)."""
    xp = _padded(x, kernel, strides, pads, dilations, out_sp, -np.inf)
    y = np.full((*x.shape[:2], *out_sp), -np.inf, np.float32)
    idx = np.zeros(y.shape, np.int64) if want_indices else None
    sp = x.shape[2:]
    grids = np.meshgrid(*[np.arange(n) * s - p for n, s, p in zip(out_sp, strides, pads)], indexing="ij")
    base = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * len(sp)) * int(np.prod(sp))
    for tap, view in _tap_views(xp, kernel, strides, dilations, out_sp):
        better = view > y
        np.copyto(y, view, where=better)
        if want_indices:
            coords = [g + t * d for g, t, d in zip(grids, tap, dilations)]
            dims = list(sp)
            if storage_order == 1 and len(sp) >= 2:
                coords[-1], coords[-2] = coords[-2], coords[-1]
                dims[-1], dims[-2] = dims[-2], dims[-1]
            flat = np.ravel_multi_index([np.clip(c, 0, n - 1) for c, n in zip(coords, dims)], dims)
            np.copyto(idx, base + flat, where=better)
    return y, idx


def _avg_nd(x, kernel, strides, pads, dilations, out_sp, count_include_pad):
    """numpy average pooling for any rank (used for 3-D)."""
    nd = len(kernel)
    xp = _padded(x, kernel, strides, pads, dilations, out_sp, 0.0)
    ones = np.zeros((1, 1, *xp.shape[2:]), np.float32)
    inner = tuple(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(nd))
    if count_include_pad:
        inner = tuple(slice(0, pads[i] + x.shape[2 + i] + pads[nd + i]) for i in range(nd))
    ones[(slice(None), slice(None)) + inner] = 1.0
    acc = np.zeros((*x.shape[:2], *out_sp), np.float32)
    cnt = np.zeros((1, 1, *out_sp), np.float32)
    for (_, view), (_, oview) in zip(_tap_views(xp, kernel, strides, dilations, out_sp),
                                     _tap_views(ones, kernel, strides, dilations, out_sp)):
        acc += view
        cnt += oview
    return acc / np.maximum(cnt, 1.0)
