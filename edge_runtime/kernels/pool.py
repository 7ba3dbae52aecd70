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

Max without indices (what models use) has three paths, chosen once per input shape by
:func:`max_pool_runner`: stride 1 runs each tap as one pass over the whole padded tensor
(:func:`_max2d_stride1`; YOLO's SPPF 5x5 on 10x10 planes went 10x -> 2x onnxruntime's time),
2x2 stride 2 reads two rows directly (:func:`_max2x2s2`; U-Net's pools 0.7x onnxruntime's),
other strides take separable row maxima (:func:`_max2d_values`; ResNet's 3x3/2 stem ~1.1x).
A NaN anywhere in a window wins, as in PyTorch (onnxruntime's MLAS keeps one only by position).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numba
import numpy as np
from numba import uint64 as u64
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


@numba.njit(cache=True, inline="always")
def _nan_max(a, b):  # pragma: no cover
    """max(a, b) where a NaN in ``a`` wins (NaN in ``b`` stays too): vectorises as compare + blend."""
    return a if (a > b or a != a) else b


@numba.njit(cache=True, fastmath=False, error_model="numpy", boundscheck=False)
def _max_cols(row, buf, ow_n, kw, sw, dw):  # pragma: no cover
    """row[ow] = max_j buf[ow * sw + j * dw]; strides 1 and 2 get constant-stride loops that vectorise."""
    for ow in range(ow_n):
        row[u64(ow)] = buf[u64(ow * sw)]
    for j in range(1, kw):
        off = j * dw
        if sw == 1:
            for ow in range(ow_n):
                row[u64(ow)] = _nan_max(buf[u64(ow + off)], row[u64(ow)])
        elif sw == 2:
            for ow in range(ow_n):
                row[u64(ow)] = _nan_max(buf[u64(2 * ow + off)], row[u64(ow)])
        else:
            for ow in range(ow_n):
                row[u64(ow)] = _nan_max(buf[u64(ow * sw + off)], row[u64(ow)])


@numba.njit(cache=True, fastmath=False, error_model="numpy", boundscheck=False)
def _max2x2s2(x, y):  # pragma: no cover
    """2x2 stride-2 max without padding (U-Net, VGG): each output reads two rows at stride 2."""
    planes = x.shape[0]
    oh_n, ow_n = y.shape[1], y.shape[2]
    for p in range(planes):
        for oh in range(oh_n):
            r0 = x[p, 2 * oh]
            r1 = x[p, 2 * oh + 1]
            row = y[p, oh]
            for ow in range(ow_n):
                j = u64(2 * ow)
                row[u64(ow)] = _nan_max(_nan_max(r0[j], r0[j + 1]), _nan_max(r1[j], r1[j + 1]))
    return y


@numba.njit(cache=True, fastmath=False, error_model="numpy", boundscheck=False)
def _max2d_values(x, y, kh, kw, sh, sw, ph, pw, dh, dw):  # pragma: no cover
    """Separable max (no indices): the window's rows into a -inf padded line, then its columns.

    Every loop indexes whole contiguous rows (no strided array views, which numba cannot
    vectorise): 5-10x faster than views on YOLO's SPPF (5x5, stride 1) and ResNet's stem pool.
    """
    planes, hgt, wid = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    tw = (ow_n - 1) * sw + (kw - 1) * dw + 1
    n_in = max(0, min(wid, tw - pw))
    buf = np.full(max(tw, pw + wid), -np.inf, np.float32)  # cells outside [pw, pw + n_in) stay -inf
    for p in range(planes):
        xp = x[p]
        yp = y[p]
        for oh in range(oh_n):
            h0 = oh * sh - ph
            first = True
            for i in range(kh):
                h = h0 + i * dh
                if 0 <= h < hgt:
                    src = xp[h]
                    if first:
                        for k in range(n_in):
                            buf[u64(pw + k)] = src[u64(k)]
                        first = False
                    else:
                        for k in range(n_in):
                            buf[u64(pw + k)] = _nan_max(src[u64(k)], buf[u64(pw + k)])
            if first:  # no input row in the window (dilation over padding)
                for k in range(n_in):
                    buf[u64(pw + k)] = -np.inf
            _max_cols(yp[oh], buf, ow_n, kw, sw, dw)
    return y


@numba.njit(cache=True, fastmath=False, error_model="numpy", boundscheck=False)
def _max2d_stride1(x, y, kh, kw, ph, pw, dh, dw):  # pragma: no cover
    """Stride-1 max over all planes at once: each tap is one pass over the whole padded tensor.

    The planes are copied into a -inf bordered (planes, Hp, Wp) buffer; output (p, oh, ow)
    then sits at flat p*Hp*Wp + oh*Wp + ow, so a vertical tap i reads offset i*dh*Wp and a
    horizontal tap j offset j*dw, both over one long contiguous vector (junk cells between
    planes are computed and dropped). On small planes (YOLO's SPPF at 10x10 or 20x20) rows
    are too short to vectorise; this runs a few long loops instead of planes*rows*taps short ones.
    """
    planes, hgt, wid = x.shape
    oh_n, ow_n = y.shape[1], y.shape[2]
    hp, wp = oh_n + (kh - 1) * dh, ow_n + (kw - 1) * dw
    plane = hp * wp
    pad = np.full(planes * plane, -np.inf, np.float32)
    r0, r1 = max(0, -ph), min(hgt, hp - ph)  # input rows / columns inside the buffer
    c0, c1 = max(0, -pw), min(wid, wp - pw)
    for p in range(planes):
        for h in range(r0, r1):
            src = x[p, h]
            base = p * plane + (h + ph) * wp + pw
            for w in range(c0, c1):
                pad[u64(base + w)] = src[u64(w)]
    n_v = planes * plane - (kh - 1) * dh * wp
    vert = pad[:n_v].copy()
    for i in range(1, kh):
        off = i * dh * wp
        for k in range(n_v):
            vert[u64(k)] = _nan_max(pad[u64(k + off)], vert[u64(k)])
    n_h = n_v - (kw - 1) * dw
    horiz = pad  # reuse: vert holds everything still needed
    for k in range(n_h):
        horiz[u64(k)] = vert[u64(k)]
    for j in range(1, kw):
        off = j * dw
        for k in range(n_h):
            horiz[u64(k)] = _nan_max(vert[u64(k + off)], horiz[u64(k)])
    for p in range(planes):
        for oh in range(oh_n):
            row = y[p, oh]
            base = p * plane + oh * wp
            for ow in range(ow_n):
                row[u64(ow)] = horiz[u64(base + ow)]
    return y


@numba.njit(cache=True, fastmath=FAST, error_model="numpy", boundscheck=False)
def _plane_means(x, out):  # pragma: no cover
    """out[p] = mean of row p of a C-contiguous (planes, HW) float32 array (float32 sums, vectorised)."""
    planes, n = x.shape
    inv = np.float32(1.0) / np.float32(n)
    for p in range(planes):
        row = x[p]
        acc = np.float32(0.0)
        for k in range(n):
            acc += row[u64(k)]
        out[u64(p)] = acc * inv


def global_avg_pool(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Mean over every spatial dim of (N, C, *spatial) float32, keeping them as size 1.

    Example:
        >>> global_avg_pool(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)).ravel().tolist()
        [1.5, 5.5]
    """
    planes = np.ascontiguousarray(x, dtype=np.float32).reshape(x.shape[0] * x.shape[1], -1)
    out = np.empty(planes.shape[0], np.float32)
    _plane_means(planes, out)
    return out.reshape(x.shape[:2] + (1,) * (x.ndim - 2))


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
        if s2[0] == 1 and s2[1] == 1:
            _max2d_stride1(planes, y, k2[0], k2[1], p2[0], p2[1], d2[0], d2[1])
        else:
            _max2d_values(planes, y, k2[0], k2[1], s2[0], s2[1], p2[0], p2[1], d2[0], d2[1])
        return y.reshape((*x.shape[:2], *out_sp)), None
    idx = np.empty(y.shape, np.int64)
    _max2d(planes, y, idx, want_indices, storage_order == 1 and x.ndim == 4, k2[0], k2[1], s2[0], s2[1],
           p2[0], p2[1], d2[0], d2[1])
    shape = (*x.shape[:2], *out_sp)
    return y.reshape(shape), (idx.reshape(shape) if want_indices else None)


def max_pool_runner(x_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                    pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool = False):
    """A function ``x -> y`` running :func:`max_pool` (values only) for inputs of shape ``x_shape``.

    The geometry is resolved once, so a call is the kernel plus ~1 us: for plan-time builders.

    Returns:
        callable taking a C-contiguous float32 (N, C, *spatial) array, or None for 3-D pools
        (callers use :func:`max_pool`).
    """
    if len(x_shape) > 4:
        return None
    out_sp = conv_out_spatial(x_shape[2:], kernel, strides, dilations, pads, ceil_mode)
    k2, s2, p2, d2 = _params_2d(kernel, strides, pads, dilations)
    planes_n, hgt, wid = int(np.prod(x_shape[:2])), (1 if len(x_shape) == 3 else x_shape[2]), x_shape[-1]
    y_shape, out_shape = (planes_n, 1 if len(x_shape) == 3 else out_sp[0], out_sp[-1]), (*x_shape[:2], *out_sp)
    stride1 = s2[0] == 1 and s2[1] == 1
    two_by_two = (list(k2) == [2, 2] and list(s2) == [2, 2] and list(d2) == [1, 1] and p2[0] == 0 and p2[1] == 0
                  and 2 * y_shape[1] <= hgt and 2 * y_shape[2] <= wid)

    def run(x: NDArray[np.float32]) -> NDArray[np.float32]:
        planes = x.reshape(planes_n, hgt, wid)
        y = np.empty(y_shape, np.float32)
        if stride1:
            _max2d_stride1(planes, y, k2[0], k2[1], p2[0], p2[1], d2[0], d2[1])
        elif two_by_two:
            _max2x2s2(planes, y)
        else:
            _max2d_values(planes, y, k2[0], k2[1], s2[0], s2[1], p2[0], p2[1], d2[0], d2[1])
        return y.reshape(out_shape)

    return run


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
