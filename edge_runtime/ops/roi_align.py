"""RoiAlign (opset 10 and 16): the box head of two-stage detectors (Faster/Mask R-CNN exports).

Each RoI ``[x1, y1, x2, y2]`` (scaled by ``spatial_scale``, shifted by -0.5 with
``half_pixel``) is split into ``output_height x output_width`` bins; each bin averages (or
maxes) bilinear samples on a ``grid_h x grid_w`` grid (``sampling_ratio``, or
``ceil(roi_size / output_size)`` when it is 0). Semantics are onnxruntime's (and Caffe2's):
a sample more than one pixel outside the map is zero, one within a pixel is clamped to the
edge; ``output_half_pixel`` (the opset-10 behaviour) makes every RoI at least 1x1; ``max``
takes the largest *weighted corner* ``w_i * v_i`` over all samples, as onnxruntime does.

The taps (pixel indices and bilinear weights of every sample along each axis) are computed
for all RoIs at once in the input's float type, as onnxruntime computes its coordinates, one
batch per sampling-grid size; the sampling loop itself is a numba kernel that follows
onnxruntime's (:mod:`edge_runtime.kernels.roi_align`), so NaN and Inf reach the bins they reach
there: an outside sample reads ``0 * X[c, 0, 0]``, and ``max`` keeps a NaN only where
onnxruntime's ``std::max`` chain keeps it (first corner, first sample).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError, UnsupportedDTypeError
from edge_runtime.kernels.roi_align import roi_align_bins
from edge_runtime.ops.registry import register

Array = NDArray[Any]
Taps = tuple[Array, Array, Array]  # (index, weight, outside) of one axis, see _axis_samples

_MODES = ("avg", "max")
_TRANSFORMS = ("half_pixel", "output_half_pixel")


def _axis_samples(start: Array, size: Array, bins: int, grid: int, length: int, dt: np.dtype) -> Taps:
    """Bilinear taps along one axis for RoIs sharing ``grid`` samples per bin.

    Args:
        start, size: (R,) the RoIs' start and extent on this axis, in ``dt``.

    Returns:
        ``idx`` (R, bins, grid, 2) int64 pixel indices, ``w`` (R, bins, grid, 2) weights and ``outside``
        (R, bins, grid): samples outside ``[-1, length]``, whose weights are 0 (index 0).
    """
    with np.errstate(invalid="ignore", over="ignore"):  # an Inf/NaN RoI: its samples are outside
        bin_size = (size / bins).astype(dt)[:, None, None]
        pos = (start[:, None, None] + np.arange(bins, dtype=dt)[None, :, None] * bin_size
               + (np.arange(grid, dtype=dt)[None, None, :] + dt.type(0.5)) * bin_size / dt.type(grid))
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


def _adaptive_grid(size: Array, bins: int) -> Array:
    """``ceil(size / bins)`` samples per bin; 0 (an all-zero RoI) for an empty, inverted or NaN RoI."""
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.isfinite(size) & (size > 0)
        return np.where(ok, np.ceil(np.where(ok, size, 0) / bins), 0).astype(np.int64)


def _roi_align(X: Array, rois: Array, batch_indices: Array, mode: str, output_height: int, output_width: int,
               sampling_ratio: int, spatial_scale: float, half_pixel: bool) -> Array:
    _check(X, rois, batch_indices, mode, output_height, output_width)
    dt = X.dtype
    n, c, height, width = X.shape
    out = np.zeros((rois.shape[0], c, output_height, output_width), dt)
    boxes = rois.astype(dt, copy=False) * dt.type(spatial_scale) - dt.type(0.5 if half_pixel else 0.0)
    x_start, y_start, x_end, y_end = boxes.T
    roi_w, roi_h = x_end - x_start, y_end - y_start
    if not half_pixel:  # the legacy behaviour: malformed RoIs become 1x1
        roi_w, roi_h = np.maximum(roi_w, dt.type(1)), np.maximum(roi_h, dt.type(1))
    fixed = np.full(rois.shape[0], sampling_ratio, np.int64)
    grid_h = fixed if sampling_ratio > 0 else _adaptive_grid(roi_h, output_height)
    grid_w = fixed if sampling_ratio > 0 else _adaptive_grid(roi_w, output_width)
    batch = np.asarray(batch_indices, np.int64)
    x_hwc = np.ascontiguousarray(X.reshape(n, c, height * width).transpose(0, 2, 1))  # channels innermost
    sampled = (grid_h > 0) & (grid_w > 0)  # an empty RoI has no samples: its bins stay 0
    for gh, gw in np.unique(np.stack([grid_h, grid_w], axis=1)[sampled], axis=0).tolist():
        sel = np.flatnonzero((grid_h == gh) & (grid_w == gw))
        taps_y = _axis_samples(y_start[sel], roi_h[sel], output_height, gh, height, dt)
        taps_x = _axis_samples(x_start[sel], roi_w[sel], output_width, gw, width, dt)
        roi_align_bins(x_hwc, width, batch[sel], sel, taps_y, taps_x, mode == "max", out)
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
