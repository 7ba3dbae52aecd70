"""Integer MatMul/Conv: MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv (ai.onnx).

The dense (numba-only) path: zero points are subtracted, products accumulate exactly
(float64 BLAS: every int8 x int8 dot product below 2**53 is exact, and is what an int32
accumulator holds unless it overflows), and QLinear* outputs are requantized the way
onnxruntime's MLAS does (float32 multiplier ``x_scale * w_scale / y_scale``, round half to
even, saturate; see :func:`edge_runtime.ops.quantize.requantize`). Speed is not a target
here: the zero-skipping int8 kernels are :mod:`edge_runtime.kernels.sparse_int8`, and dense
int8 segments go to onnxruntime when it is installed.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels.geometry import check_positive, conv_out_spatial, resolve_pads
from edge_runtime.ops.quantize import QUANT_TYPES, check_quant_dtype, requantize
from edge_runtime.ops.registry import register

Array = NDArray[Any]
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))


def centered(op: str, name: str, x: Array, zero_point: Array | None, axis: int | None = None) -> Array:
    """``x - zero_point`` as float64 (exact); ``zero_point`` scalar, or 1-D along ``axis``.

    Raises:
        UnsupportedDTypeError: x is not uint8/int8 (or 16-bit).
        InvalidArgumentError: the zero point's length does not match ``x.shape[axis]``.
    """
    x = np.asarray(x)
    check_quant_dtype(op, name, x, QUANT_TYPES)
    out = x.astype(np.float64)
    if zero_point is None:
        return out
    zp = np.asarray(zero_point).astype(np.float64)
    if zp.size == 1:
        return out - zp.reshape(())
    if axis is None or zp.ndim != 1 or zp.shape[0] != x.shape[axis]:
        raise InvalidArgumentError(
            f"{op}: zero point '{name}' has shape {zp.shape}, which does not fit input {x.shape}; expected a "
            f"scalar or a 1-D tensor of length {x.shape[axis] if axis is not None else 1}. Re-quantize.")
    shape = [1] * x.ndim
    shape[axis] = -1
    return out - zp.reshape(shape)


def int_matmul(a: Array, b: Array) -> Array:
    """Exact integer matmul of centred float64 operands, as int32 (numpy batching rules).

    Raises:
        InvalidInputError: the contracted dimensions differ.
    """
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[0 if b.ndim == 1 else -2]:
        raise InvalidInputError(
            f"shapes {a.shape} and {b.shape} cannot be multiplied; expected A's last dimension to equal B's "
            f"second-to-last (numpy matmul rules). Check the input shapes fed to the model.")
    return np.rint(np.matmul(a, b)).astype(np.int32)


@register("MatMulInteger", since_version=10)
def MatMulInteger(A: Array, B: Array, a_zero_point: Array | None = None, b_zero_point: Array | None = None
                  ) -> Array:
    """ONNX MatMulInteger: ``(A - a_zp) @ (B - b_zp)`` in int32 (a_zp per row, b_zp per column allowed)."""
    a = centered("MatMulInteger", "A", A, a_zero_point, np.ndim(A) - 2 if np.ndim(A) >= 2 else 0)
    b = centered("MatMulInteger", "B", B, b_zero_point, np.ndim(B) - 1)
    return int_matmul(a, b)


def _columns(x: Array, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
             dilations: Sequence[int]) -> Array:
    """im2col view of a centred (N, C, *S) input: (N, C, *O, *K), zero padded."""
    nd = len(kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))  # (N, C, *O_full, *span)
    out = conv_out_spatial(x.shape[2:], kernel, strides, dilations, pads)
    index = (slice(None), slice(None)) + tuple(slice(0, o * s, s) for o, s in zip(out, strides))
    index += tuple(slice(None, None, d) for d in dilations)
    return win[index]


def int_conv(x: Array, w: Array, group: int, kernel: Sequence[int], strides: Sequence[int],
             pads: Sequence[int], dilations: Sequence[int]) -> Array:
    """Exact grouped N-d convolution of centred float64 operands, as int32 (N, M, *O).

    Raises:
        InvalidInputError: the channel counts do not fit ``group``.
    """
    n, c = x.shape[:2]
    m = w.shape[0]
    if c % group or m % group or w.shape[1] * group != c:
        raise InvalidInputError(
            f"ConvInteger/QLinearConv: input has {c} channels and weights {w.shape} with group={group}; "
            f"expected input channels = W.shape[1] * group and W.shape[0] divisible by group.")
    cols = _columns(x, kernel, strides, pads, dilations)  # (N, C, *O, *K)
    nd = len(kernel)
    out_sp = cols.shape[2:2 + nd]
    cg, mg = c // group, m // group
    ys = []
    for g in range(group):
        cg_cols = cols[:, g * cg:(g + 1) * cg]
        perm = (0,) + tuple(range(2, 2 + nd)) + (1,) + tuple(range(2 + nd, 2 + 2 * nd))
        flat = cg_cols.transpose(perm).reshape(n, -1, cg * int(np.prod(kernel)))  # (N, O, Cg*K)
        wg = w[g * mg:(g + 1) * mg].reshape(mg, -1)  # (Mg, Cg*K)
        ys.append(np.matmul(flat, wg.T))  # (N, O, Mg)
    y = np.concatenate(ys, axis=2).transpose(0, 2, 1).reshape(n, m, *out_sp)
    return np.rint(y).astype(np.int32)


def conv_geometry(op: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], auto_pad: str, dilations: Any,
                  kernel_shape: Any, pads: Any, strides: Any) -> tuple[list[int], list[int], list[int], list[int]]:
    """Validated (kernel, strides, pads, dilations) of an integer convolution.

    Raises:
        InvalidInputError: the input's rank does not fit the weights.
        InvalidArgumentError: bad kernel_shape, strides, dilations or pads.
    """
    nd = len(w_shape) - 2
    if len(x_shape) != nd + 2:
        raise InvalidInputError(f"{op}: input shape {x_shape} does not fit weights {w_shape}; expected rank "
                                f"{nd + 2} (N, C, <{nd} spatial dims>). Check the producer of this tensor.")
    kernel = list(w_shape[2:])
    if kernel_shape is not None and [int(k) for k in kernel_shape] != kernel:
        raise InvalidArgumentError(f"{op}: kernel_shape={list(kernel_shape)} does not match the weights' "
                                   f"spatial shape {kernel}. Fix or drop the model's kernel_shape attribute.")
    strides = check_positive("strides", strides if strides is not None else [1] * nd, nd)
    dilations = check_positive("dilations", dilations if dilations is not None else [1] * nd, nd)
    pads = resolve_pads(auto_pad, x_shape[2:], kernel, strides, dilations, pads)
    return kernel, strides, pads, dilations


@register("ConvInteger", since_version=10)
def ConvInteger(x: Array, w: Array, x_zero_point: Array | None = None, w_zero_point: Array | None = None, *,
                auto_pad: str = "NOTSET", dilations: Any = None, group: int = 1, kernel_shape: Any = None,
                pads: Any = None, strides: Any = None) -> Array:
    """ONNX ConvInteger: ``conv(x - x_zp, w - w_zp)`` in int32 (padding holds x_zp; w_zp per channel)."""
    geom = conv_geometry("ConvInteger", np.shape(x), np.shape(w), auto_pad, dilations, kernel_shape, pads, strides)
    xc = centered("ConvInteger", "x", x, x_zero_point)
    wc = centered("ConvInteger", "w", w, w_zero_point, 0)
    return int_conv(xc, wc, int(group), *geom)


def _per_channel(scale: Array, ndim: int, axis: int) -> Array:
    s = np.asarray(scale, np.float32)
    if s.size == 1:
        return s.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return s.reshape(shape)


@register("QLinearConv", since_version=10)
def QLinearConv(x: Array, x_scale: Array, x_zero_point: Array, w: Array, w_scale: Array, w_zero_point: Array,
                y_scale: Array, y_zero_point: Array, B: Array | None = None, *, auto_pad: str = "NOTSET",
                dilations: Any = None, group: int = 1, kernel_shape: Any = None, pads: Any = None,
                strides: Any = None) -> Array:
    """ONNX QLinearConv: int32 conv + int32 bias, requantized to y's type (w_scale/w_zp per channel)."""
    check_quant_dtype("QLinearConv", "x", np.asarray(x), _INT8)
    geom = conv_geometry("QLinearConv", np.shape(x), np.shape(w), auto_pad, dilations, kernel_shape, pads, strides)
    acc = int_conv(centered("QLinearConv", "x", x, x_zero_point),
                   centered("QLinearConv", "w", w, w_zero_point, 0), int(group), *geom)
    if B is not None:
        acc = acc + np.asarray(B, np.int32).reshape([1, -1] + [1] * (acc.ndim - 2))
    ws = _per_channel(w_scale, acc.ndim, 1)
    mult = np.float32(x_scale) * ws / np.float32(y_scale)
    return requantize(acc, mult, np.asarray(y_zero_point).astype(np.float32), np.asarray(y_zero_point).dtype)


@register("QLinearMatMul", since_version=10)
def QLinearMatMul(a: Array, a_scale: Array, a_zero_point: Array, b: Array, b_scale: Array, b_zero_point: Array,
                  y_scale: Array, y_zero_point: Array) -> Array:
    """ONNX QLinearMatMul: int32 matmul requantized to y's type (b's scale/zp per column allowed)."""
    nb = np.ndim(b)
    acc = int_matmul(centered("QLinearMatMul", "a", a, a_zero_point, np.ndim(a) - 2 if np.ndim(a) >= 2 else 0),
                     centered("QLinearMatMul", "b", b, b_zero_point, nb - 1))
    bs = np.asarray(b_scale, np.float32)
    mult = np.asarray(a_scale, np.float32).reshape(()) * (bs.reshape(()) if bs.size == 1 else bs) \
        / np.asarray(y_scale, np.float32).reshape(())
    out_type = np.asarray(y_zero_point).dtype
    y = requantize(acc, mult, np.asarray(y_zero_point).astype(np.float32), out_type)
    return y
