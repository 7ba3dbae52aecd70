"""Normalization operators (inference): BatchNormalization, LayerNormalization,
InstanceNormalization, GroupNormalization, LpNormalization.

All compute in float32. Normalizations first fold their statistics into a per-row
multiplier and work in place on one fresh buffer, so LayerNormalization on a ViT token
matrix (197 x 768) costs one subtraction pass plus two in-place passes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.kernels.norm import layer_norm_rows
from edge_runtime.ops.elementwise import FLOAT, check_dtype
from edge_runtime.ops.registry import register

Array = NDArray[Any]


def _channel_shape(x: Array) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel (axis 1) vector against ``x``."""
    return (-1,) + (1,) * (x.ndim - 2)


def _normalize(x: Array, axes: tuple[int, ...], epsilon: float) -> tuple[Array, Array, Array]:
    """(x - mean) / sqrt(var + eps) over ``axes``; returns (normalized, mean, inv_std) keepdims."""
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float32)
    d = x - mean
    var = np.mean(np.square(d), axis=axes, keepdims=True, dtype=np.float32)
    inv_std = np.float32(1.0) / np.sqrt(var + np.float32(epsilon))
    d *= inv_std
    return d, mean, inv_std


def _batch_norm_inference(op: str, X: Array, scale: Array, B: Array, mean: Array, var: Array,
                          epsilon: float) -> Array:
    check_dtype(op, X, FLOAT)
    if X.ndim < 2 or any(p.shape != (X.shape[1],) for p in (scale, B, mean, var)):
        raise InvalidInputError(
            f"{op}: input {X.shape} with scale {scale.shape}, B {B.shape}, mean {mean.shape}, var {var.shape}; "
            f"expected rank >= 2 and every parameter of shape (C,) with C = input.shape[1]. Check the input.")
    a = (scale / np.sqrt(var.astype(np.float32) + np.float32(epsilon))).astype(np.float32)
    b = (B - mean * a).astype(np.float32)
    y = X * a.reshape(_channel_shape(X))
    y += b.reshape(_channel_shape(X))
    return y


@register("BatchNormalization", since_version=9)
def BatchNormalization_9(X: Array, scale: Array, B: Array, mean: Array, var: Array, *,
                         epsilon: float = 1e-5, momentum: float = 0.9) -> Array:
    """Inference BatchNormalization (opset 9-13): (X - mean) / sqrt(var + eps) * scale + B per channel."""
    return _batch_norm_inference("BatchNormalization", X, scale, B, mean, var, epsilon)


@register("BatchNormalization", since_version=14)
def BatchNormalization(X: Array, scale: Array, B: Array, input_mean: Array, input_var: Array, *,
                       epsilon: float = 1e-5, momentum: float = 0.9, training_mode: int = 0) -> Array:
    """Inference BatchNormalization (opset 14+; 15 only widened the parameter types).

    Raises:
        InvalidModelError: training_mode=1 (batch statistics): edge_runtime is inference-only.
    """
    if training_mode:
        raise InvalidModelError(
            "BatchNormalization: training_mode=1 is not supported; edge_runtime runs inference only and "
            "expected training_mode=0. Export the model after model.eval().")
    return _batch_norm_inference("BatchNormalization", X, scale, B, input_mean, input_var, epsilon)


@register("LayerNormalization", since_version=17)
def LayerNormalization(X: Array, Scale: Array, B: Array | None = None, *, axis: int = -1,
                       epsilon: float = 1e-5, stash_type: int = 1) -> tuple[Array, Array, Array]:
    """Normalize over dims ``axis..rank-1``, then Y = normalized * Scale + B.

    Returns:
        (Y, Mean, InvStdDev); Mean/InvStdDev have X's shape with the normalized dims set to 1.

    Raises:
        InvalidModelError: ``axis`` is outside [-rank, rank).
    """
    check_dtype("LayerNormalization", X, FLOAT)
    if not -X.ndim <= axis < X.ndim:
        raise InvalidModelError(f"LayerNormalization: axis={axis} is out of range for input rank {X.ndim}; "
                                f"expected -{X.ndim} <= axis < {X.ndim}. Re-export the model.")
    axes = tuple(range(axis % X.ndim, X.ndim))
    trailing = X.shape[axes[0]:]
    if X.size and np.shape(Scale) == trailing and (B is None or np.shape(B) == trailing):
        # rows of the normalized dims: one numba pass (kernels/norm.py)
        y, mean, inv_std = layer_norm_rows(X.reshape(-1, int(np.prod(trailing))), Scale, B, epsilon)
        stats = X.shape[:axes[0]] + (1,) * len(axes)
        return y.reshape(X.shape), mean.reshape(stats), inv_std.reshape(stats)
    y, mean, inv_std = _normalize(X, axes, epsilon)
    y *= Scale
    if B is not None:
        y += B
    return y, mean, inv_std


@register("InstanceNormalization", since_version=6)
def InstanceNormalization(input: Array, scale: Array, B: Array, *, epsilon: float = 1e-5) -> Array:
    """Normalize each (n, c) plane over its spatial dims, then scale and shift per channel."""
    check_dtype("InstanceNormalization", input, FLOAT)
    y, _, _ = _normalize(input, tuple(range(2, input.ndim)), epsilon)
    y *= scale.reshape(_channel_shape(input))
    y += B.reshape(_channel_shape(input))
    return y


def _group_norm(X: Array, scale: Array, bias: Array, epsilon: float, num_groups: int, per_group: bool) -> Array:
    check_dtype("GroupNormalization", X, FLOAT)
    n, c = X.shape[0], X.shape[1]
    if num_groups <= 0 or c % num_groups:
        raise InvalidModelError(
            f"GroupNormalization: num_groups={num_groups} does not divide the {c} channels; expected a "
            f"positive divisor of the channel count. Re-export the model.")
    grouped = X.reshape(n, num_groups, -1)  # (N, G, C/G * spatial)
    y, _, _ = _normalize(grouped, (2,), epsilon)
    y = y.reshape(X.shape)
    if per_group:  # opset 18: scale/bias have one value per group
        scale, bias = np.repeat(scale, c // num_groups), np.repeat(bias, c // num_groups)
    y *= scale.reshape(_channel_shape(X))
    y += bias.reshape(_channel_shape(X))
    return y


@register("GroupNormalization", since_version=18)
def GroupNormalization_18(X: Array, scale: Array, bias: Array, *, epsilon: float = 1e-5,
                          num_groups: int) -> Array:
    """GroupNormalization (opset 18-20): scale and bias per group."""
    return _group_norm(X, scale, bias, epsilon, num_groups, per_group=True)


@register("GroupNormalization", since_version=21)
def GroupNormalization(X: Array, scale: Array, bias: Array, *, epsilon: float = 1e-5, num_groups: int,
                       stash_type: int = 1) -> Array:
    """GroupNormalization (opset 21+): scale and bias per channel."""
    return _group_norm(X, scale, bias, epsilon, num_groups, per_group=False)


@register("LpNormalization", since_version=1)
def LpNormalization(input: Array, *, axis: int = -1, p: int = 2) -> Array:
    """input / ||input||_p along ``axis`` (p in {1, 2}); zero-norm slices give 0.

    Raises:
        InvalidModelError: p is not 1 or 2.
    """
    check_dtype("LpNormalization", input, FLOAT)
    if p == 2:
        norm = np.sqrt(np.sum(np.square(input), axis=axis, keepdims=True))
    elif p == 1:
        norm = np.sum(np.abs(input), axis=axis, keepdims=True)
    else:
        raise InvalidModelError(f"LpNormalization: p={p} is invalid; expected 1 or 2. Re-export the model.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm == 0, np.float32(0), input / norm)


@register("LRN", since_version=1)
def LRN(X: Array, *, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, size: int) -> Array:
    """Local response normalization across channels (AlexNet, GoogLeNet, ZFNet).

    y[n, c] = x[n, c] / (bias + alpha / size * sum(x[n, c'] ** 2))) ** beta over
    c' in [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)] (clipped to the channels).

    Raises:
        InvalidModelError: size < 1.
    """
    check_dtype("LRN", X, FLOAT)
    if size < 1:
        raise InvalidModelError(f"LRN: size={size} is invalid; expected an odd number >= 1. Re-export the model.")
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.square(X.astype(np.float32, copy=False))
    pad = [(0, 0)] * X.ndim
    pad[1] = (lo + 1, hi)                                # a leading 0 for the cumulative sum
    csum = np.cumsum(np.pad(sq, pad), axis=1, dtype=np.float32)
    c = X.shape[1]
    window = csum[:, size:size + c] - csum[:, :c]       # (N, C, ...): sum of the size squares around c
    scale = np.float32(bias) + np.float32(alpha / size) * window
    return (X / np.power(scale, np.float32(beta))).astype(np.float32, copy=False)
