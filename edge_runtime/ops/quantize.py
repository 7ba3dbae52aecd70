"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear with onnxruntime's integer semantics.

Quantize: ``y = saturate(round_half_to_even(x / scale) + zero_point)`` in float32, per
tensor, per axis (1-D scale) or blocked (scale with the input's rank, ``block_size``
elements of ``axis`` per scale). Dequantize: ``(x - zero_point) * scale``. The zero
point's dtype picks the integer type (uint8 when absent); int8, uint8, int16, uint16 and
int32 (dequantize only) are supported. The helpers here (:func:`quantize`,
:func:`dequantize`, :func:`requantize`) are shared by the QLinear* ops in
:mod:`edge_runtime.ops.quant_linear` and :mod:`edge_runtime.ops.quant_contrib`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidModelError, UnsupportedDTypeError
from edge_runtime.kernels.lookup import lookup_bytes
from edge_runtime.kernels.quantize import dequantize_tensor, quantize_tensor
from edge_runtime.ops.registry import INTERNAL_DOMAIN, register, register_builder

Array = NDArray[Any]

#: Integer types a quantized tensor may have.
QUANT_TYPES = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.uint16), np.dtype(np.int16))
#: onnx TensorProto element type -> numpy dtype, for QuantizeLinear's ``output_dtype``.
_BYTE_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
_ONNX_TO_NP = {2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16), 5: np.dtype(np.int16)}


def check_quant_dtype(op: str, name: str, x: Array, allowed: tuple[np.dtype, ...] = QUANT_TYPES) -> None:
    """Raise unless ``x`` is an integer tensor of one of ``allowed`` types.

    Raises:
        UnsupportedDTypeError: naming the op, the input, its dtype and the accepted ones.
    """
    if x.dtype not in allowed:
        names = ", ".join(str(d) for d in allowed)
        raise UnsupportedDTypeError(
            f"{op}: input '{name}' has dtype {x.dtype}; expected one of [{names}]. Quantize the model with "
            f"onnxruntime.quantization (uint8/int8 activations and weights) or export it in float32.")


def _along(param: Array, x: Array, axis: int, block_size: int, op: str) -> Array:
    """``param`` (scale or zero point) broadcastable to ``x``: scalar, per-axis or blocked.

    Raises:
        InvalidArgumentError: the parameter's shape fits none of the three layouts.
    """
    param = np.asarray(param)
    if param.size == 1 and block_size == 0:
        return param.reshape(())
    axis = axis % x.ndim if x.ndim else 0
    if block_size == 0 and param.ndim == 1 and param.shape[0] == x.shape[axis]:
        shape = [1] * x.ndim
        shape[axis] = -1
        return param.reshape(shape)
    if block_size > 0 and param.ndim == x.ndim:
        blocks = -(-x.shape[axis] // block_size)
        if param.shape[axis] == blocks:
            return np.repeat(param, block_size, axis=axis).take(np.arange(x.shape[axis]), axis=axis)
    raise InvalidArgumentError(
        f"{op}: scale/zero point of shape {param.shape} does not fit input {x.shape} with axis={axis}, "
        f"block_size={block_size}; expected a scalar, a 1-D tensor of length x.shape[axis], or (blocked) "
        f"x's shape with ceil(x.shape[axis] / block_size) along axis. Re-quantize the model.")


def saturate(values: Array, dtype: np.dtype) -> Array:
    """Round half to even and clamp float values into ``dtype``'s range (onnxruntime's saturation)."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def quantize(x: Array, scale: Array, zero_point: Array | int, dtype: np.dtype) -> Array:
    """``saturate(rint(x / scale) + zero_point)`` computed in float32 (scale/zp already broadcastable)."""
    q = np.asarray(x, np.float32) / np.asarray(scale, np.float32)
    return saturate(np.rint(q) + np.asarray(zero_point, np.float32), dtype)


def dequantize(x: Array, scale: Array, zero_point: Array | int) -> Array:
    """``(x - zero_point) * scale`` in float32 (scale/zp already broadcastable)."""
    diff = np.asarray(x, np.int32) - np.asarray(zero_point, np.int32)
    return (diff.astype(np.float32) * np.asarray(scale, np.float32)).astype(np.float32)


def requantize(acc: Array, multiplier: Array, zero_point: Array | int, dtype: np.dtype) -> Array:
    """int32 accumulators to ``dtype``: ``saturate(rint(float32(acc) * multiplier) + zero_point)``.

    This is onnxruntime's (MLAS) requantization for QLinearConv/QLinearMatMul: a float32
    multiplier ``x_scale * w_scale / y_scale`` (per output channel when w_scale is).
    """
    scaled = np.asarray(acc, np.float32) * np.asarray(multiplier, np.float32)
    return saturate(np.rint(scaled) + np.asarray(zero_point, np.float32), dtype)


def _output_dtype(op: str, zero_point: Array | None, output_dtype: int) -> np.dtype:
    if zero_point is not None:
        check_quant_dtype(op, "y_zero_point", np.asarray(zero_point))
        return np.asarray(zero_point).dtype
    if output_dtype == 0:
        return np.dtype(np.uint8)
    if output_dtype not in _ONNX_TO_NP:
        raise UnsupportedDTypeError(
            f"{op}: output_dtype={output_dtype} is not supported; expected one of {sorted(_ONNX_TO_NP)} "
            f"(UINT8, INT8, UINT16, INT16). Quantize to 8 or 16-bit integers.")
    return _ONNX_TO_NP[output_dtype]


@register("QuantizeLinear", since_version=10)
def QuantizeLinear(x: Array, y_scale: Array, y_zero_point: Array | None = None, *, axis: int = 1,
                   block_size: int = 0, output_dtype: int = 0, saturate: int = 1, precision: int = 0) -> Array:
    """ONNX QuantizeLinear: per tensor, per axis or blocked; round half to even, saturate.

    Raises:
        UnsupportedDTypeError: the zero point or ``output_dtype`` is not an 8/16-bit integer type.
        InvalidArgumentError: the scale/zero point shape fits neither layout.
    """
    del saturate, precision  # only float8 outputs use them
    dtype = _output_dtype("QuantizeLinear", y_zero_point, int(output_dtype))
    x = np.asarray(x)
    if x.dtype == np.float32 and dtype in _BYTE_RANGE and np.size(y_scale) == 1 and int(block_size) == 0 and (
            y_zero_point is None or np.size(y_zero_point) == 1):  # per tensor: one compiled pass
        out = np.empty(x.shape, dtype)
        zp = 0 if y_zero_point is None else int(np.asarray(y_zero_point).reshape(()))
        if quantize_tensor(x.reshape(-1), np.float32(np.asarray(y_scale, np.float32).reshape(())), zp,
                           *_BYTE_RANGE[dtype], out.reshape(-1)):
            return out
    scale = _along(y_scale, x, axis, int(block_size), "QuantizeLinear")
    zp = 0 if y_zero_point is None else _along(y_zero_point, x, axis, int(block_size), "QuantizeLinear")
    return quantize(x, scale, zp, dtype)


@register("DequantizeLinear", since_version=10)
def DequantizeLinear(x: Array, x_scale: Array, x_zero_point: Array | None = None, *, axis: int = 1,
                     block_size: int = 0, output_dtype: int = 0) -> Array:
    """ONNX DequantizeLinear: ``(x - zero_point) * scale``, per tensor, per axis or blocked.

    Raises:
        UnsupportedDTypeError: x is not an 8/16-bit integer or int32 tensor.
        InvalidArgumentError: the scale/zero point shape fits neither layout.
    """
    del output_dtype  # the output type is the scale's (float32 in this runtime)
    x = np.asarray(x)
    check_quant_dtype("DequantizeLinear", "x", x, QUANT_TYPES + (np.dtype(np.int32),))
    if x.dtype in _BYTE_RANGE and np.size(x_scale) == 1 and np.asarray(x_scale).dtype == np.float32 \
            and int(block_size) == 0 and (x_zero_point is None or np.size(x_zero_point) == 1):
        out = np.empty(x.shape, np.float32)  # per tensor: one compiled pass
        zp = 0 if x_zero_point is None else int(np.asarray(x_zero_point).reshape(()))
        dequantize_tensor(np.ascontiguousarray(x).reshape(-1), np.float32(np.asarray(x_scale).reshape(())), zp,
                          out.reshape(-1))
        return out
    scale = _along(x_scale, x, axis, int(block_size), "DequantizeLinear")
    zp = 0 if x_zero_point is None else _along(x_zero_point, x, axis, int(block_size), "DequantizeLinear")
    y = dequantize(x, scale, zp)
    return y.astype(np.asarray(x_scale).dtype) if np.asarray(x_scale).dtype == np.float16 else y


def _per_tensor(node: Any, consts: list) -> tuple[np.float32, int, np.dtype] | None:
    """(scale, zero point, byte dtype) of a Q/DQ node with constant per-tensor float32 parameters, else None."""
    scale = consts[1] if len(consts) > 1 else None
    zp = consts[2] if len(consts) > 2 else None
    if scale is None or (len(node.inputs) > 2 and node.inputs[2] and zp is None) or int(
            dict(node.attrs).get("block_size", 0)) or int(dict(node.attrs).get("output_dtype", 0)):
        return None
    scale, zp = np.asarray(scale), None if zp is None else np.asarray(zp)
    dtype = np.dtype(np.uint8) if zp is None else zp.dtype
    if scale.size != 1 or scale.dtype != np.float32 or dtype not in _BYTE_RANGE or (zp is not None and zp.size != 1):
        return None
    return np.float32(scale.reshape(())), 0 if zp is None else int(zp.reshape(())), dtype


@register_builder("QuantizeLinear", since_version=10)
def quantize_linear_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """Per-tensor QuantizeLinear of a float32 input with constant parameters: the compiled pass, checked once.

    The op itself re-reads and re-checks the scale and zero point on every call (about 5 us of
    a 6 us run on the 784-pixel input of an int8 CNN); a NaN input or another dtype runs the op.
    """
    params = _per_tensor(node, consts)
    if params is None:
        return None
    scale, zp, dtype = params
    lo, hi = _BYTE_RANGE[dtype]
    attrs = dict(node.attrs)

    def run(x, *inputs):
        if x.dtype == np.float32:
            out = np.empty(x.shape, dtype)
            if quantize_tensor(x.reshape(-1), scale, zp, lo, hi, out.reshape(-1)):
                return out
        return QuantizeLinear(x, *inputs, **attrs)

    return run


@register_builder("DequantizeLinear", since_version=10)
def dequantize_linear_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """Per-tensor DequantizeLinear of a uint8/int8 input with constant parameters: the compiled pass."""
    params = _per_tensor(node, consts)
    if params is None:
        return None
    scale, zp, dtype = params
    attrs = dict(node.attrs)

    def run(x, *inputs):
        if x.dtype != dtype:
            return DequantizeLinear(x, *inputs, **attrs)
        out = np.empty(x.shape, np.float32)
        dequantize_tensor(np.ascontiguousarray(x).reshape(-1), scale, zp, out.reshape(-1))
        return out

    return run


@register("DynamicQuantizeLinear", since_version=11)
def DynamicQuantizeLinear(x: Array) -> tuple[Array, Array, Array]:
    """ONNX DynamicQuantizeLinear: uint8 with a range that always includes 0.

    Returns:
        ``(y, y_scale, y_zero_point)``: uint8 tensor, float32 scalar, uint8 scalar.
    Raises:
        UnsupportedDTypeError: x is not float32.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise UnsupportedDTypeError(f"DynamicQuantizeLinear: input dtype {x.dtype}; expected float32. "
                                    f"Cast the input to float32.")
    lo = min(0.0, float(x.min())) if x.size else 0.0
    hi = max(0.0, float(x.max())) if x.size else 0.0
    scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255.0))
    if scale == 0:  # all zeros: onnxruntime divides by 1 instead
        scale = np.float32(1.0) if hi == lo else scale
    zp = saturate(np.rint(np.float32(0.0) - np.float32(lo) / scale), np.dtype(np.uint8))
    y = quantize(x, scale, zp, np.dtype(np.uint8))
    return y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)


@register("QuantizedLookup", domain=INTERNAL_DOMAIN)
def QuantizedLookup(x: Array, table: Array) -> Array:
    """``table[b]`` for each byte ``b`` of the uint8/int8 ``x`` (by bit pattern): a DequantizeLinear ->
    element-wise -> QuantizeLinear chain evaluated once on all 256 inputs (passes/quantized_lookup.py).

    Raises:
        UnsupportedDTypeError: ``x`` is not uint8/int8.
        InvalidModelError: ``table`` does not hold 256 entries.
    """
    check_quant_dtype("QuantizedLookup", "x", x, QUANT_TYPES[:2])
    if np.asarray(table).shape != (256,):
        raise InvalidModelError(f"QuantizedLookup: table has shape {np.shape(table)}; expected (256,). The node was "
                                f"not produced by edge_runtime's planner.")
    return lookup_bytes(np.asarray(x).view(np.uint8), np.asarray(table))
