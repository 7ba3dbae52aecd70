"""Dense MatMul / Gemm and the internal fused variants (``ai.edge_runtime``).

Everything goes through numpy's matmul (BLAS sgemm for float32); transposes are views
(BLAS takes them as trans flags), bias and scaling are applied in place on the freshly
allocated product, so a Gemm costs one allocation. A batched MatMul against a 2-D
weight, as in every Transformer Linear ``(B, T, K) @ (K, N)``, is folded into one
``(B*T, K) @ (K, N)`` GEMM instead of B separate ones.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError
from edge_runtime.kernels.activation import apply_activation
from edge_runtime.ops.elementwise import NUMERIC, check_dtype
from edge_runtime.ops.registry import INTERNAL_DOMAIN, register

Array = NDArray[Any]


def matmul(A: Array, B: Array) -> Array:
    """numpy-semantics matmul (N-d batching, 1-D promotion) with the 2-D-weight fast path.

    Raises:
        InvalidInputError: the contracted dimensions differ.
    """
    if A.ndim == 0 or B.ndim == 0 or A.shape[-1] != B.shape[0 if B.ndim == 1 else -2]:
        raise InvalidInputError(
            f"MatMul: shapes {A.shape} and {B.shape} cannot be multiplied; expected A's last dimension to "
            f"equal B's second-to-last (numpy matmul rules). Check the input shapes fed to the model.")
    if A.ndim > 2 and B.ndim == 2 and A.flags.c_contiguous:
        out = A.reshape(-1, A.shape[-1]) @ B  # (B*T, K) @ (K, N): one BLAS call
        return out.reshape(*A.shape[:-1], B.shape[1])
    out = np.matmul(A, B)
    return out if isinstance(out, np.ndarray) else np.asarray(out)


@register("MatMul", since_version=1)
def MatMul(A: Array, B: Array) -> Array:
    """ONNX MatMul: numpy matmul semantics (batched broadcasting, 1-D promotion).

    Raises:
        UnsupportedDTypeError: an input is not float32/int32/int64.
        InvalidInputError: the contracted dimensions differ.
    """
    check_dtype("MatMul", A, NUMERIC)
    check_dtype("MatMul", B, NUMERIC)
    return matmul(A, B)


def gemm(A: Array, B: Array, C: Array | None, alpha: float, beta: float, transA: int, transB: int) -> Array:
    """alpha * op(A) @ op(B) + beta * C, with C broadcast to (M, N); one allocation.

    Raises:
        InvalidInputError: A or B is not 2-D, or the inner dimensions differ.
    """
    if A.ndim != 2 or B.ndim != 2:
        raise InvalidInputError(f"Gemm: inputs must be 2-D matrices, got A {A.shape} and B {B.shape}; "
                                f"flatten the input first (ONNX Flatten before Gemm).")
    a = A.T if transA else A
    b = B.T if transB else B
    if a.shape[1] != b.shape[0]:
        raise InvalidInputError(
            f"Gemm: op(A) {a.shape} and op(B) {b.shape} (transA={transA}, transB={transB}) have different "
            f"inner dimensions; expected op(A)'s columns to equal op(B)'s rows. Check the input shape.")
    y = a @ b  # (M, N)
    if alpha != 1.0:
        y *= y.dtype.type(alpha)
    if C is not None and beta != 0.0:
        if beta == 1.0:
            y += C
        else:
            y += C * C.dtype.type(beta)
    return y


@register("Gemm", since_version=7)
def Gemm(A: Array, B: Array, C: Array | None = None, *, alpha: float = 1.0, beta: float = 1.0,
         transA: int = 0, transB: int = 0) -> Array:
    """ONNX Gemm: alpha * op(A) @ op(B) + beta * C (C unidirectionally broadcast).

    Raises:
        UnsupportedDTypeError: an input is not float32/int32/int64.
        InvalidInputError: shapes do not fit.
    """
    check_dtype("Gemm", A, NUMERIC)
    check_dtype("Gemm", B, NUMERIC)
    return gemm(A, B, C, alpha, beta, transA, transB)


@register("FusedGemm", domain=INTERNAL_DOMAIN, since_version=1)
def FusedGemm(A: Array, B: Array, C: Array | None = None, *, alpha: float = 1.0, beta: float = 1.0,
              transA: int = 0, transB: int = 0, activation: int = 0, act_p0: float = 0.0,
              act_p1: float = 0.0) -> Array:
    """Gemm followed by a fused activation (codes in edge_runtime.kernels.activation), in place."""
    check_dtype("FusedGemm", A, NUMERIC)
    y = gemm(A, B, C, alpha, beta, transA, transB)
    return apply_activation(y, activation, act_p0, act_p1) if activation else y


@register("FusedMatMul", domain=INTERNAL_DOMAIN, since_version=1)
def FusedMatMul(A: Array, B: Array, bias: Array | None = None, *, activation: int = 0,
                act_p0: float = 0.0, act_p1: float = 0.0) -> Array:
    """MatMul, plus ``bias`` along the last axis, then a fused activation, in place."""
    check_dtype("FusedMatMul", A, NUMERIC)
    y = matmul(A, B)
    if bias is not None:
        y += bias
    return apply_activation(y, activation, act_p0, act_p1) if activation else y
