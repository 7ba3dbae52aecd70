"""Resize (opset 10/11/13/18/19) and Upsample (opset 7/9).

Resize is separable: every resized axis gets a *tap table* (for each output index, the
input indices it reads and their weights), computed once per call in float64 from the
spec's coordinate transformation, then applied one axis at a time. Two fast paths cover
what U-Nets use: nearest resizing by an integer factor is a broadcast copy, and 2-tap
(bi)linear resizing of the last two axes of float32 data runs in a numba kernel
(:mod:`edge_runtime.ops.resize_kernels`) instead of numpy temporaries.

Semantics follow ``onnx.reference.ops.op_resize`` (and onnxruntime): out-of-range taps are
clamped to the edge (except with ``exclude_outside``), ``tf_crop_and_resize`` writes
``extrapolation_value`` outside the ROI, antialias widens the linear/cubic kernels by
1/scale when downsampling.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.ops.registry import register
from edge_runtime.ops.resize_kernels import apply_nearest, apply_taps
from edge_runtime.ops.resize_tables import AxisTaps, axis_taps

Array = NDArray[Any]

_POLICIES = ("stretch", "not_larger", "not_smaller")


def _floats(values: Any) -> list[float]:
    return [] if values is None else [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _spread(values: list[Any], axes: list[int], rank: int, fill: list[Any]) -> list[Any]:
    """Scatter per-``axes`` values into a per-dim list whose other entries come from ``fill``."""
    full = list(fill)
    for value, axis in zip(values, axes):
        full[axis] = value
    return full


def _norm_axes(axes: Sequence[int] | None, rank: int) -> list[int]:
    if not axes:
        return list(range(rank))
    norm = [a + rank if a < 0 else a for a in axes]
    if any(not 0 <= a < rank for a in norm) or len(set(norm)) != len(norm):
        raise InvalidModelError(
            f"Resize: axes {list(axes)} must be distinct and within [{-rank}, {rank - 1}] for a rank-{rank} "
            "input. Fix the node's axes attribute.")
    return norm


def _out_shape(shape: tuple[int, ...], scales: list[float], sizes: list[int], axes: list[int],
               policy: str) -> tuple[list[int], list[float]]:
    """Output shape and per-dim scale factors from ``scales`` or ``sizes`` (given for ``axes``)."""
    rank = len(shape)
    if scales:
        if len(scales) != len(axes):
            raise InvalidInputError(
                f"Resize: {len(scales)} scales given for {len(axes)} axes (input shape {shape}); "
                "give one scale per resized axis.")
        full = _spread(scales, axes, rank, [1.0] * rank)
        if any(s <= 0 for s in full):
            raise InvalidInputError(f"Resize: scales {scales} must all be > 0.")
        # floor(in * scale) in float64, as the reference does with float32 scales
        return [int(math.floor(d * s)) for d, s in zip(shape, full)], full
    if len(sizes) != len(axes):
        raise InvalidInputError(
            f"Resize: neither scales nor sizes fit: sizes {sizes} for {len(axes)} axes (input shape {shape}). "
            "Give exactly one of scales/sizes, one value per resized axis.")
    out = _spread(sizes, axes, rank, list(shape))
    factors = [o / d if d else 1.0 for o, d in zip(out, shape)]
    if policy == "stretch":
        return out, factors
    if policy not in _POLICIES:
        raise InvalidModelError(f"Resize: keep_aspect_ratio_policy '{policy}' is not one of {_POLICIES}.")
    pick = min if policy == "not_larger" else max
    scale = pick(factors[a] for a in axes)
    out = [int(scale * d + 0.5) if i in axes else d for i, d in enumerate(shape)]
    return out, [scale if i in axes else 1.0 for i in range(rank)]


def _roi_pairs(roi: Any, axes: list[int], rank: int) -> list[tuple[float, float]]:
    """Per-dim (start, end) of the normalised ROI; (0, 1) where none is given."""
    values = _floats(roi)
    pairs = [(0.0, 1.0)] * rank
    if not values:
        return pairs
    n = len(axes)
    if len(values) != 2 * n:
        raise InvalidInputError(
            f"Resize: roi has {len(values)} values; expected 2 * {n} (starts then ends of the resized axes).")
    for i, axis in enumerate(axes):
        pairs[axis] = (values[i], values[n + i])
    return pairs


def resize(X: Array, roi: Any = None, scales: Any = None, sizes: Any = None, *, mode: str = "nearest",
           coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
           exclude_outside: int = 0, extrapolation_value: float = 0.0,
           nearest_mode: str = "round_prefer_floor", antialias: int = 0,
           axes: Sequence[int] | None = None, keep_aspect_ratio_policy: str = "stretch") -> Array:
    """Resize ``X`` per the ONNX Resize spec (every opset; missing attributes take defaults).

    Args:
        X: input tensor of any rank.
        roi: normalised crop box for ``tf_crop_and_resize`` (starts then ends), or None/empty.
        scales: per-axis scale factors, or None/empty when ``sizes`` is given.
        sizes: per-axis output sizes (int64), or None.
        mode: "nearest", "linear" or "cubic".
        coordinate_transformation_mode: how output coordinates map back to input ones.
        cubic_coeff_a: the cubic kernel's ``a``.
        exclude_outside: zero and renormalise the weights of taps outside the input.
        extrapolation_value: value written outside the ROI by ``tf_crop_and_resize``.
        nearest_mode: rounding rule of ``mode="nearest"``.
        antialias: widen linear/cubic kernels when downsampling.
        axes: the axes ``scales``/``sizes``/``roi`` refer to (all by default).
        keep_aspect_ratio_policy: "stretch", "not_larger" or "not_smaller" (with ``sizes``).

    Returns:
        The resized tensor, in ``X``'s dtype.

    Raises:
        InvalidInputError: scales/sizes/roi do not fit the input.
        InvalidModelError: an attribute has a value the spec does not define.
    """
    rank = X.ndim
    axes_n = _norm_axes(axes, rank)
    scale_list = _floats(scales)
    size_list = [] if sizes is None else [int(v) for v in np.asarray(sizes).reshape(-1)]
    out_shape, factors = _out_shape(X.shape, scale_list, size_list, axes_n, keep_aspect_ratio_policy)
    pairs = _roi_pairs(roi, axes_n, rank)
    plans: dict[int, AxisTaps] = {}
    for axis in axes_n:
        is_identity = out_shape[axis] == X.shape[axis] and factors[axis] == 1.0 and pairs[axis] == (0.0, 1.0)
        if is_identity and coordinate_transformation_mode != "tf_crop_and_resize":
            continue
        plans[axis] = axis_taps(
            X.shape[axis], out_shape[axis], factors[axis], pairs[axis], mode=mode,
            coordinate_mode=coordinate_transformation_mode, nearest_mode=nearest_mode,
            cubic_a=cubic_coeff_a, exclude_outside=bool(exclude_outside), antialias=bool(antialias))
    if not plans:
        return X.copy()
    if mode == "nearest":
        return apply_nearest(X, plans, extrapolation_value)
    return apply_taps(X, plans, extrapolation_value)


@register("Resize", since_version=10)
def Resize_10(X: Array, scales: Array, *, mode: str = "nearest") -> Array:
    """Opset-10 Resize: Upsample semantics (asymmetric coordinates, nearest rounds down)."""
    return resize(X, None, scales, None, mode=mode, coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor")


@register("Resize", since_version=11)
def Resize_11(X: Array, roi: Array | None = None, scales: Array | None = None, sizes: Array | None = None, *,
              coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
              exclude_outside: int = 0, extrapolation_value: float = 0.0, mode: str = "nearest",
              nearest_mode: str = "round_prefer_floor") -> Array:
    """Opset 11-17 Resize: roi, scales or sizes; coordinate modes incl. tf_half_pixel_for_nn."""
    return resize(X, roi, scales, sizes, mode=mode, coordinate_transformation_mode=coordinate_transformation_mode,
                  cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside,
                  extrapolation_value=extrapolation_value, nearest_mode=nearest_mode)


@register("Resize", since_version=18)
def Resize(X: Array, roi: Array | None = None, scales: Array | None = None, sizes: Array | None = None, *,
           antialias: int = 0, axes: Sequence[int] | None = None,
           coordinate_transformation_mode: str = "half_pixel", cubic_coeff_a: float = -0.75,
           exclude_outside: int = 0, extrapolation_value: float = 0.0,
           keep_aspect_ratio_policy: str = "stretch", mode: str = "nearest",
           nearest_mode: str = "round_prefer_floor") -> Array:
    """Opset 18+ Resize: adds antialias, axes, keep_aspect_ratio_policy (19: half_pixel_symmetric)."""
    return resize(X, roi, scales, sizes, mode=mode, coordinate_transformation_mode=coordinate_transformation_mode,
                  cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside,
                  extrapolation_value=extrapolation_value, nearest_mode=nearest_mode, antialias=antialias,
                  axes=axes, keep_aspect_ratio_policy=keep_aspect_ratio_policy)


def _upsample(X: Array, scales: Any, mode: str) -> Array:
    if mode not in ("nearest", "linear", "bilinear"):
        raise InvalidModelError(f"Upsample: mode '{mode}' is not 'nearest' or 'linear'.")
    scale_list = _floats(scales)
    if len(scale_list) != X.ndim or any(s < 1 for s in scale_list):
        raise InvalidInputError(f"Upsample: scales {scale_list} must give one value >= 1 per dim of {X.shape}.")
    return resize(X, None, scale_list, None, mode="nearest" if mode == "nearest" else "linear",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@register("Upsample", since_version=7)
def Upsample_7(X: Array, *, mode: str = "nearest", scales: Sequence[float] = ()) -> Array:
    """Opset-7 Upsample: scales as an attribute."""
    return _upsample(X, scales, mode)


@register("Upsample", since_version=9)
def Upsample(X: Array, scales: Array, *, mode: str = "nearest") -> Array:
    """Opset 9 Upsample: scales as an input (deprecated in 10 in favour of Resize)."""
    return _upsample(X, scales, mode)
