"""Per-axis tap tables for Resize: which input indices each output index reads, with weights.

Everything here is O(output size of one axis) in float64, so it is cheap next to the
resize itself; the conventions (ratio in (0, 1], edge clamping, antialias footprints)
mirror ``onnx.reference.ops.op_resize`` so results match the reference bit for bit
up to float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidModelError

COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = ("nearest", "linear", "cubic")


@dataclass(frozen=True)
class AxisTaps:
    """How one axis is resampled.

    Attributes:
        index: (out, n) input indices, clamped into [0, in - 1]; n == 1 for nearest.
        weight: (out, n) float64 weights (rows sum to 1), or None for nearest.
        outside: (out,) bool, True where tf_crop_and_resize extrapolates; None if never.
    """

    index: NDArray[np.intp]
    weight: NDArray[np.float64] | None
    outside: NDArray[np.bool_] | None


def source_coords(coordinate_mode: str, out_size: int, in_size: int, scale: float,
                  roi: tuple[float, float]) -> tuple[NDArray[np.float64], NDArray[np.bool_] | None]:
    """Input coordinate of every output index, and the tf_crop_and_resize extrapolation mask.

    Raises:
        InvalidModelError: unknown ``coordinate_mode``.
    """
    y = np.arange(out_size, dtype=np.float64)
    length = scale * in_size  # the spec's un-rounded output length
    outside = None
    if coordinate_mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / length)
        x = offset + (y + 0.5) / scale - 0.5
    elif coordinate_mode == "pytorch_half_pixel":
        x = np.full(out_size, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    elif coordinate_mode == "align_corners":
        x = np.zeros(out_size) if length == 1 else y * (in_size - 1) / (length - 1)
    elif coordinate_mode == "asymmetric":
        x = y / scale
    elif coordinate_mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif coordinate_mode == "tf_crop_and_resize":
        start, end = roi
        if length == 1:
            x = np.full(out_size, (end - start) * (in_size - 1) / 2)
        else:
            x = y * (end - start) * (in_size - 1) / (length - 1)
        x = x + start * (in_size - 1)
        outside = (x < 0) | (x > in_size - 1)
    else:
        raise InvalidModelError(
            f"Resize: coordinate_transformation_mode '{coordinate_mode}' is not one of {COORDINATE_MODES}.")
    return x, (outside if outside is not None and outside.any() else None)


def nearest_index(x: NDArray[np.float64], nearest_mode: str, in_size: int) -> NDArray[np.intp]:
    """Round source coordinates per ``nearest_mode`` and clamp into the input.

    Raises:
        InvalidModelError: unknown ``nearest_mode``.
    """
    floor = np.floor(x)
    frac = x - floor
    if nearest_mode == "round_prefer_floor":
        idx = np.where(frac <= 0.5, floor, floor + 1)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.where(frac < 0.5, floor, floor + 1)
    elif nearest_mode == "floor":
        idx = floor
    elif nearest_mode == "ceil":
        idx = np.ceil(x)
    else:
        raise InvalidModelError(f"Resize: nearest_mode '{nearest_mode}' is not one of {NEAREST_MODES}.")
    return np.clip(idx, 0, in_size - 1).astype(np.intp)


def _cubic(d: NDArray[np.float64], a: float) -> NDArray[np.float64]:
    """Keys' cubic convolution kernel at distances ``d``."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _linear(d: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.clip(1 - np.abs(d), 0, 1)


def _filter_taps(x: NDArray[np.float64], in_size: int, mode: str, scale: float, cubic_a: float,
                 exclude_outside: bool, antialias: bool) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Tap indices and weights of the linear/cubic filter at source coordinates ``x``."""
    support = 1.0 if mode == "linear" else 2.0
    stretch = min(scale, 1.0) if antialias else 1.0
    first = int(np.floor(-support / stretch) + 1)  # offset of the first tap from `left`
    n = 2 - 2 * first
    left = np.ceil(x) - 1  # the reference prefers the left pixel: ratio in (0, 1]
    ratio = x - left
    offsets = np.arange(first, first + n, dtype=np.float64)
    dist = (offsets[None, :] - ratio[:, None]) * stretch  # (out, n)
    weight = _linear(dist) if mode == "linear" else _cubic(dist, cubic_a)
    if antialias:
        weight = weight / weight.sum(axis=1, keepdims=True)
    taps = left[:, None].astype(np.int64) + offsets.astype(np.int64)[None, :]
    if exclude_outside:
        weight = np.where((taps < 0) | (taps >= in_size), 0.0, weight)
        total = weight.sum(axis=1, keepdims=True)
        weight = weight / np.where(total == 0, 1.0, total)
    return np.clip(taps, 0, in_size - 1).astype(np.intp), weight


def axis_taps(in_size: int, out_size: int, scale: float, roi: tuple[float, float], *, mode: str,
              coordinate_mode: str, nearest_mode: str, cubic_a: float, exclude_outside: bool,
              antialias: bool) -> AxisTaps:
    """The tap table of one axis.

    Args:
        in_size: input length of the axis.
        out_size: output length.
        scale: the spec's scale factor for the axis (given, or out/in from sizes).
        roi: (start, end) normalised crop for tf_crop_and_resize.
        mode: "nearest", "linear" or "cubic".
        coordinate_mode: coordinate_transformation_mode.
        nearest_mode: rounding of "nearest".
        cubic_a: cubic_coeff_a.
        exclude_outside: renormalise without taps that fall outside the input.
        antialias: widen the filter by 1/scale when downsampling (linear/cubic only).

    Returns:
        The :class:`AxisTaps` for the axis.

    Raises:
        InvalidModelError: unknown mode, or antialias with nearest.
    """
    if mode not in MODES:
        raise InvalidModelError(f"Resize: mode '{mode}' is not one of {MODES}.")
    x, outside = source_coords(coordinate_mode, out_size, in_size, scale, roi)
    if mode == "nearest":
        if antialias:
            raise InvalidModelError("Resize: antialias=1 is not defined for mode 'nearest'; use linear or cubic.")
        return AxisTaps(nearest_index(x, nearest_mode, in_size)[:, None], None, outside)
    index, weight = _filter_taps(x, in_size, mode, scale, cubic_a, exclude_outside, antialias)
    return AxisTaps(index, weight, outside)


def repeat_factor(taps: AxisTaps, in_size: int) -> int | None:
    """The integer k when a nearest table is ``out[i] = in[i // k]`` (a plain repeat), else None."""
    out_size = taps.index.shape[0]
    if taps.outside is not None or in_size == 0 or out_size % in_size:
        return None
    k = out_size // in_size
    expected: Any = np.arange(out_size) // k
    return k if np.array_equal(taps.index[:, 0], expected) else None
