"""A quantized conv/GEMM with the QuantizedLookup that reads it folded in: QLinearConvLookup, QGemmLookup.

Internal ops written by :mod:`edge_runtime.passes.fuse_lookup`: the inputs are the conv's (or
QGemm's) followed by the lookup's 256-entry table, and the result is ``table[byte]`` of the
conv's quantized output: the plain ops below compute exactly that (the op, then the lookup),
and the plan-time builders apply the table in the int8 kernels' requantize epilogue, so the
conv's bytes are never written out and read back (:mod:`edge_runtime.ops.quant_sparse`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from edge_runtime.ops.quant_contrib import QGemm
from edge_runtime.ops.quant_linear import QLinearConv
from edge_runtime.ops.quant_sparse import conv_runner, qgemm_runner
from edge_runtime.ops.quantize import QuantizedLookup
from edge_runtime.ops.registry import INTERNAL_DOMAIN, register, register_builder

Array = NDArray[Any]


@register("QLinearConvLookup", domain=INTERNAL_DOMAIN)
def QLinearConvLookup(x: Array, x_scale: Array, x_zero_point: Array, w: Array, w_scale: Array, w_zero_point: Array,
                      y_scale: Array, y_zero_point: Array, B: Array | None = None, table: Array | None = None, *,
                      auto_pad: str = "NOTSET", dilations: Any = None, group: int = 1, kernel_shape: Any = None,
                      pads: Any = None, strides: Any = None) -> Array:
    """``QuantizedLookup(QLinearConv(...), table)`` (attributes: QLinearConv's)."""
    y = QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B, auto_pad=auto_pad,
                    dilations=dilations, group=group, kernel_shape=kernel_shape, pads=pads, strides=strides)
    return QuantizedLookup(y, table)


@register("QGemmLookup", domain=INTERNAL_DOMAIN)
def QGemmLookup(A: Array, a_scale: Array, a_zero_point: Array, B: Array, b_scale: Array, b_zero_point: Array,
                C: Array | None = None, y_scale: Array | None = None, y_zero_point: Array | None = None,
                table: Array | None = None, *, alpha: float = 1.0, transA: int = 0, transB: int = 0) -> Array:
    """``QuantizedLookup(QGemm(...), table)`` for a QGemm with quantized output (attributes: QGemm's)."""
    y = QGemm(A, a_scale, a_zero_point, B, b_scale, b_zero_point, C, y_scale, y_zero_point, alpha=alpha,
              transA=transA, transB=transB)
    return QuantizedLookup(y, table)


def _table(consts: list, index: int) -> Array | None:
    table = consts[index] if index < len(consts) else None
    return None if table is None or np.shape(table) != (256,) else np.ascontiguousarray(table)


@register_builder("QLinearConvLookup", domain=INTERNAL_DOMAIN)
def qlinear_conv_lookup_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """The int8 conv kernels with the table in their epilogue (None: the plain op runs)."""
    table = _table(consts, 9)
    return None if table is None else conv_runner(node, consts, table)


@register_builder("QGemmLookup", domain=INTERNAL_DOMAIN)
def qgemm_lookup_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """The zero-skipping int8 GEMM, QGemm's compiled epilogue and the table (None: the plain op runs)."""
    table = _table(consts, 9)
    return None if table is None else qgemm_runner(node, consts, table)
