"""onnxruntime's com.microsoft quantized ops that ``quantize_static(quant_format=QOperator)`` emits.

QGemm, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearConcat, QLinearSigmoid and
QLinearLeakyRelu (onnxruntime's ContribOperators.md). Element-wise ops dequantize, compute
in float32 and quantize back (onnxruntime computes the same through lookup tables or
fixed-point, so outputs agree up to one quantization step); QGemm accumulates exactly in
integers like QLinearMatMul.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.ops.quant_linear import centered, int_matmul
from edge_runtime.ops.quantize import check_quant_dtype, dequantize, quantize
from edge_runtime.ops.registry import register

Array = NDArray[Any]
MS_DOMAIN = "com.microsoft"
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))


def _deq(op: str, name: str, x: Array, scale: Array, zero_point: Array | None) -> Array:
    x = np.asarray(x)
    check_quant_dtype(op, name, x, _INT8)
    return dequantize(x, np.asarray(scale, np.float32).reshape(()),
                      0 if zero_point is None else np.asarray(zero_point).reshape(()))


def _q(y: Array, scale: Array, zero_point: Array | None, like: Array) -> Array:
    dtype = np.asarray(like).dtype if zero_point is None else np.asarray(zero_point).dtype
    zp = 0 if zero_point is None else np.asarray(zero_point).reshape(())
    return quantize(y, np.asarray(scale, np.float32).reshape(()), zp, dtype)


@register("QGemm", domain=MS_DOMAIN, since_version=1)
def QGemm(A: Array, a_scale: Array, a_zero_point: Array, B: Array, b_scale: Array, b_zero_point: Array,
          C: Array | None = None, y_scale: Array | None = None, y_zero_point: Array | None = None, *,
          alpha: float = 1.0, transA: int = 0, transB: int = 0) -> Array:
    """com.microsoft QGemm: ``alpha * a_s * b_s * (int32 op(A) @ op(B) + C)``, quantized when y_scale is given.

    C is int32 with scale ``alpha * a_scale * b_scale`` (per column with per-column b_scale).
    """
    a = centered("QGemm", "A", A, a_zero_point)
    axis_b = 0 if transB else 1
    b = centered("QGemm", "B", B, b_zero_point, axis_b)
    acc = int_matmul(a.T if transA else a, b.T if transB else b)
    return qgemm_output(acc, C, alpha, a_scale, b_scale, y_scale, y_zero_point, A)


def qgemm_output(acc: Array, C: Array | None, alpha: float, a_scale: Array, b_scale: Array, y_scale: Array | None,
                 y_zero_point: Array | None, A: Array) -> Array:
    """QGemm's epilogue on the int32 products ``acc`` (M, N): + C, scaled to float, quantized when y_scale is
    given (shared with the zero-skipping builder in :mod:`edge_runtime.ops.quant_sparse`)."""
    if C is not None:
        acc = acc + np.asarray(C, np.int32)
    scale = np.float32(alpha) * np.asarray(a_scale, np.float32).reshape(()) * np.asarray(b_scale, np.float32)
    y = acc.astype(np.float32) * (scale.reshape(()) if scale.size == 1 else scale.reshape(1, -1))
    if y_scale is None:
        return y.astype(np.float32)
    return _q(y, y_scale, y_zero_point, A)


def _binary(op: str, fn: Any, A: Array, A_scale: Array, A_zero_point: Array | None, B: Array, B_scale: Array,
            B_zero_point: Array | None, C_scale: Array, C_zero_point: Array | None) -> Array:
    y = fn(_deq(op, "A", A, A_scale, A_zero_point), _deq(op, "B", B, B_scale, B_zero_point))
    return _q(y, C_scale, C_zero_point, A)


@register("QLinearAdd", domain=MS_DOMAIN, since_version=1)
def QLinearAdd(A: Array, A_scale: Array, A_zero_point: Array | None, B: Array, B_scale: Array,
               B_zero_point: Array | None, C_scale: Array, C_zero_point: Array | None = None) -> Array:
    """com.microsoft QLinearAdd: quantize(deq(A) + deq(B)) with numpy broadcasting."""
    return _binary("QLinearAdd", np.add, A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale, C_zero_point)


@register("QLinearMul", domain=MS_DOMAIN, since_version=1)
def QLinearMul(A: Array, A_scale: Array, A_zero_point: Array | None, B: Array, B_scale: Array,
               B_zero_point: Array | None, C_scale: Array, C_zero_point: Array | None = None) -> Array:
    """com.microsoft QLinearMul: quantize(deq(A) * deq(B)) with numpy broadcasting."""
    return _binary("QLinearMul", np.multiply, A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale,
                   C_zero_point)


@register("QLinearSigmoid", domain=MS_DOMAIN, since_version=1)
def QLinearSigmoid(X: Array, X_scale: Array, X_zero_point: Array | None, Y_scale: Array,
                   Y_zero_point: Array | None = None) -> Array:
    """com.microsoft QLinearSigmoid: quantize(sigmoid(deq(X)))."""
    x = _deq("QLinearSigmoid", "X", X, X_scale, X_zero_point)
    return _q((1.0 / (1.0 + np.exp(-x))).astype(np.float32), Y_scale, Y_zero_point, X)


@register("QLinearLeakyRelu", domain=MS_DOMAIN, since_version=1)
def QLinearLeakyRelu(X: Array, X_scale: Array, X_zero_point: Array | None, Y_scale: Array,
                     Y_zero_point: Array | None = None, *, alpha: float = 0.01) -> Array:
    """com.microsoft QLinearLeakyRelu: quantize(leaky_relu(deq(X), alpha))."""
    x = _deq("QLinearLeakyRelu", "X", X, X_scale, X_zero_point)
    return _q(np.where(x >= 0, x, np.float32(alpha) * x), Y_scale, Y_zero_point, X)


@register("QLinearGlobalAveragePool", domain=MS_DOMAIN, since_version=1)
def QLinearGlobalAveragePool(X: Array, x_scale: Array, x_zero_point: Array | None, y_scale: Array,
                             y_zero_point: Array | None = None, *, channels_last: int = 0) -> Array:
    """com.microsoft QLinearGlobalAveragePool: mean over the spatial axes (NCHW, or NHWC when channels_last)."""
    x = _deq("QLinearGlobalAveragePool", "X", X, x_scale, x_zero_point)
    axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
    return _q(x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32), y_scale, y_zero_point, X)


@register("QLinearConcat", domain=MS_DOMAIN, since_version=1)
def QLinearConcat(Y_scale: Array, Y_zero_point: Array, *inputs: Array, axis: int) -> Array:
    """com.microsoft QLinearConcat: inputs come as (X, X_scale, X_zero_point) triples, requantized to Y's.

    Raises:
        InvalidArgumentError: the inputs are not whole triples.
    """
    if not inputs or len(inputs) % 3:
        raise InvalidArgumentError(
            f"QLinearConcat: got {len(inputs)} inputs after Y_scale/Y_zero_point; expected (X, X_scale, "
            f"X_zero_point) triples. Re-quantize the model with onnxruntime.quantization.")
    parts = [_deq("QLinearConcat", f"X{i // 3}", inputs[i], inputs[i + 1], inputs[i + 2])
             for i in range(0, len(inputs), 3)]
    return _q(np.concatenate(parts, axis=axis), Y_scale, Y_zero_point, inputs[0])
