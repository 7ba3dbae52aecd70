"""Operator implementations, one module per op family.

Importing this package registers every op (see :mod:`edge_runtime.ops.registry`).
"""
from __future__ import annotations

from edge_runtime.ops import (  # noqa: F401  (imported for their registrations)
    activation_fused,
    cast,
    control_flow,
    conv,
    conv_layer,
    detection,
    elementwise,
    grid_sample,
    indexing,
    matmul,
    matmul_layer,
    norm,
    pool,
    quant_contrib,
    quant_fused,
    quant_linear,
    quant_sparse,
    quantize,
    reduce,
    resize,
    rnn,
    roi_align,
    shape,
    tensor,
)
from edge_runtime.ops.registry import supported_ops

__all__ = ["supported_ops"]
