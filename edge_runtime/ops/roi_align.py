"""RoiAlign (opset 10 and 16): the box head of two-stage detectors (Faster/Mask R-CNN exports).

Each RoI ``[x1, y1, x2, y2]`` (scaled by ``spatial_scale``, shifted by -0.5 with
``half_pixel``) is split into ``output_height x output_width`` bins; each bin averages (or
maxes) bilinear samples on a ``grid_h x grid_w`` grid (``sampling_ratio``, or
``ceil(roi_size / output_size)`` when it is 0). Semantics are onnxruntime's (and Caffe2's):
a sample more than one pixel outside the map is zero, one within a pixel is clamped to the
edge; ``output_half_pixel`` (the opset-10 behaviour) makes every RoI at least 1x1; ``max``
takes the largest *weighted corner* ``w_i * v_i`` over all samples, as onnxruntime does.

Vectorised per RoI: sampling is separable, so the bilinear weights of all rows form a
``(out_h, rows)`` matrix ``Wy`` and those of all columns a ``(out_w, cols)`` matrix ``Wx``
over the RoI's crop of the map; ``avg`` is ``Wy @ crop @ Wx.T`` (one matmul pair per
RoI), ``max`` gathers the 2x2 corners of every sample and reduces. Coordinates are
computed in the input's float type, as onnxruntime does.

NaN and Inf reach the bins they reach in onnxruntime: a crop with a non-finite value takes the
gather path for ``avg`` too (in the matmuls a zero weight times NaN would reach every bin of
the RoI), an outside sample reads ``0 * X[c, 0, 0]`` as onnxruntime's does, and ``max`` keeps
a NaN only where onnxruntime's ``std::max`` chain keeps it (first corner, first sample).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError, UnsupportedDTypeError
from edge_runtime.ops.registry import register

Array = NDArray[Any]
Taps = tuple[Array, Array, Array]  # (index, weight, outside) of one axis, see _axis_samples

_MODES = ("avg", "max")
_TRANSFORMS = ("half_pixel", "output_half_pixel")


def _axis_samples(start: Any, size: Any, bins: int, grid: int, length: int, dt: np.dtype) -> tuple[Array, ...]:
    """Bilinear taps of one RoI along one axis.

    Returns:
        ``idx`` (bins, grid, 2) int64 pixel indices, ``w`` (bins, grid, 2) weights and ``outside``
        (bins, grid): samples outside ``[-1, length]``, whose weights are 0 (index 0).
    """
    with np.errstate(invalid="ignore", over="ignore"):  # an Inf/NaN RoI: its samples are outside
        bin_size = dt.type(size / bins)
        pos = (start + np.arange(bins, dtype=dt)[:, None] * bin_size
               + (np.arange(grid, dtype=dt)[None, :] + dt.type(0.5)) * bin_size / dt.type(grid))  # (bins, grid)
    outside = ~((pos >= -1.0) & (pos <= length))  # NaN RoIs too
    pos = np.where(outside, 0, np.maximum(pos, 0))
    low = pos.astype(np.int64)
    edge = low >= length - 1
    low = np.where(edge, length - 1, low)
    high = np.where(edge, low, low + 1)
    frac = np.where(edge, 0, pos - low).astype(dt)
    w = np.stack([1 - frac, frac], axis=-1)
    w[outside] = 0
    idx = np.stack([low, high], axis=-1)
    idx[outside] = 0
    return idx, w, outside


def _bin_weights(idx: Array, w: Array, lo: int, span: int) -> Array:
    """(bins, grid, 2) taps -> (bins, span) averaging matrix over pixels ``lo .. lo+span-1``."""
    bins, grid = idx.shape[:2]
    out = np.zeros((bins, span), w.dtype)
    rows = np.broadcast_to(np.arange(bins)[:, None, None], idx.shape)
    np.add.at(out, (rows, idx - lo), w / w.dtype.type(grid))
    return out


def _corner_products(fmap: Array, crop: Array, taps_y: Taps, taps_x: Taps, y0: int, x0: int) -> Iterator[Array]:
    """``w * v`` of each bilinear corner (low-low first) for every sample: (C, out_h*grid_h, out_w*grid_w).

    A sample outside the map reads ``0 * X[c, 0, 0]`` at all four corners, as onnxruntime does.
    """
    (iy, wy, out_y), (ix, wx, out_x) = taps_y, taps_x
    with np.errstate(invalid="ignore"):
        zero = fmap[:, :1, :1] * 0                                             # (C, 1, 1): NaN where X[c,0,0] is
    rows_out, cols_out = out_y.reshape(-1), out_x.reshape(-1)
    for a in (0, 1):  # one corner at a time: a quarter of the temporaries
        rows = crop[:, (iy[..., a] - y0).reshape(-1)]                          # (C, oh*gh, w)
        for b in (0, 1):
            with np.errstate(invalid="ignore"):  # 0 * Inf is NaN, as in onnxruntime
                weight = wy[..., a].reshape(-1, 1) * wx[..., b].reshape(1, -1)   # (oh*gh, ow*gw)
                vals = rows[:, :, (ix[..., b] - x0).reshape(-1)] * weight
            vals[:, rows_out, :] = zero
            vals[:, :, cols_out] = zero
            yield vals


def _one_roi(fmap: Array, taps_y: Taps, taps_x: Taps, mode: str) -> Array:
    """(C, H, W) feature map and the RoI's taps -> (C, out_h, out_w)."""
    (iy, wy, _), (ix, wx, _) = taps_y, taps_x
    oh, gh = iy.shape[:2]
    ow, gw = ix.shape[:2]
    if gh == 0 or gw == 0:  # an empty RoI with half_pixel: no samples, the bin is 0
        return np.zeros((fmap.shape[0], oh, ow), fmap.dtype)
    y0, y1, x0, x1 = iy.min(), iy.max() + 1, ix.min(), ix.max() + 1
    crop = fmap[:, y0:y1, x0:x1]                                               # (C, h, w)
    shape = (fmap.shape[0], oh, gh, ow, gw)
    if mode == "avg" and np.isfinite(crop).all() and np.isfinite(fmap[:, 0, 0]).all():  # else a NaN would spread
        ay = _bin_weights(iy, wy, y0, y1 - y0)                                 # (oh, h)
        ax = _bin_weights(ix, wx, x0, x1 - x0)                                 # (ow, w)
        return np.matmul(np.matmul(ay, crop), ax.T)                            # (C, oh, ow)
    corners = _corner_products(fmap, crop, taps_y, taps_x, y0, x0)
    if mode == "avg":
        with np.errstate(invalid="ignore"):
            return sum(corners).reshape(shape).sum(axis=(2, 4)) / fmap.dtype.type(gh * gw)
    # onnxruntime's std::max chains keep a NaN only when it comes first: a sample is NaN when its
    # low-low corner is, and a bin is NaN when its first sample is; other NaNs are skipped.
    first = next(corners)
    sample = first.copy()
    for vals in corners:
        np.fmax(sample, vals, out=sample)
    sample[np.isnan(first)] = np.nan
    sample = sample.reshape(shape)
    best = np.fmax.reduce(np.fmax.reduce(sample, axis=4), axis=2)
    best[np.isnan(sample[:, :, 0, :, 0])] = np.nan
    return best


def _adaptive_grid(size: Any, bins: int) -> int:
    """``ceil(size / bins)`` samples per bin; 0 (an all-zero RoI) for an empty, inverted or NaN RoI."""
    return int(np.ceil(size / bins)) if np.isfinite(size) and size > 0 else 0


def _roi_align(X: Array, rois: Array, batch_indices: Array, mode: str, output_height: int, output_width: int,
               sampling_ratio: int, spatial_scale: float, half_pixel: bool) -> Array:
    _check(X, rois, batch_indices, mode, output_height, output_width)
    dt = X.dtype
    n, c, height, width = X.shape
    out = np.zeros((rois.shape[0], c, output_height, output_width), dt)
    boxes = rois.astype(dt, copy=False) * dt.type(spatial_scale) - dt.type(0.5 if half_pixel else 0.0)
    for r, (x_start, y_start, x_end, y_end) in enumerate(boxes):
        roi_w, roi_h = x_end - x_start, y_end - y_start
        if not half_pixel:  # the legacy behaviour: malformed RoIs become 1x1
            roi_w, roi_h = max(roi_w, dt.type(1)), max(roi_h, dt.type(1))
        gh = sampling_ratio if sampling_ratio > 0 else _adaptive_grid(roi_h, output_height)
        gw = sampling_ratio if sampling_ratio > 0 else _adaptive_grid(roi_w, output_width)
        taps_y = _axis_samples(y_start, roi_h, output_height, gh, height, dt)
        taps_x = _axis_samples(x_start, roi_w, output_width, gw, width, dt)
        out[r] = _one_roi(X[int(batch_indices[r])], taps_y, taps_x, mode)
    return out


def _check(X: Array, rois: Array, batch_indices: Array, mode: str, output_height: int, output_width: int) -> None:
    if X.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UnsupportedDTypeError(f"RoiAlign: X has dtype {X.dtype}; expected float32 or float64. "
                                    "Cast the feature map to float32.")
    if X.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.shape != (rois.shape[0],):
        raise InvalidInputError(f"RoiAlign: X {X.shape}, rois {rois.shape}, batch_indices {batch_indices.shape}; "
                                "expected (N, C, H, W), (R, 4) and (R,). Check the detector's RoI inputs.")
    if batch_indices.size and not (0 <= batch_indices.min() and batch_indices.max() < X.shape[0]):
        raise InvalidInputError(f"RoiAlign: batch_indices in [{batch_indices.min()}, {batch_indices.max()}] for a "
                                f"batch of {X.shape[0]}; expected [0, {X.shape[0] - 1}]. Check the RoIs' batch "
                                "indices.")
    if mode not in _MODES or output_height < 1 or output_width < 1:
        raise InvalidModelError(f"RoiAlign: mode '{mode}', output {output_height}x{output_width}; expected a mode "
                                f"in {_MODES} and positive output sizes. Fix the node's attributes.")


@register("RoiAlign", since_version=10)
def RoiAlign_10(X: Array, rois: Array, batch_indices: Array, *, mode: str = "avg", output_height: int = 1,
                output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0) -> Array:
    """Opset 10: no pixel shift (what opset 16 calls ``output_half_pixel``).

    Returns:
        (num_rois, C, output_height, output_width) in X's dtype.

    Raises:
        InvalidInputError: shapes or batch indices do not fit; InvalidModelError: bad attributes.
    """
    return _roi_align(X, rois, batch_indices, mode, output_height, output_width, sampling_ratio,
                      spatial_scale, False)


@register("RoiAlign", since_version=16)
def RoiAlign(X: Array, rois: Array, batch_indices: Array, *, coordinate_transformation_mode: str = "half_pixel",
             mode: str = "avg", output_height: int = 1, output_width: int = 1, sampling_ratio: int = 0,
             spatial_scale: float = 1.0) -> Array:
    """Opset 16+: ``half_pixel`` (the default, torchvision's ``aligned=True``) or ``output_half_pixel``.

    Returns:
        (num_rois, C, output_height, output_width) in X's dtype.

    Raises:
        InvalidInputError: shapes or batch indices do not fit; InvalidModelError: bad attributes.
    """
    if coordinate_transformation_mode not in _TRANSFORMS:
        raise InvalidModelError(f"RoiAlign: coordinate_transformation_mode '{coordinate_transformation_mode}'; "
                                f"expected one of {_TRANSFORMS}. Fix the node's attribute.")
    return _roi_align(X, rois, batch_indices, mode, output_height, output_width, sampling_ratio,
                      spatial_scale, coordinate_transformation_mode == "half_pixel")
