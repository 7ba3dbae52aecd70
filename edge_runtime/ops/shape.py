"""Shape and constant-generating operators: Shape, Size, Constant, ConstantOfShape, Range,
EyeLike, Trilu, NonZero, OneHot, Einsum.

Output dtypes follow the spec exactly: Shape, Size and NonZero give int64.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import onnx.helper
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError, UnsupportedDTypeError
from edge_runtime.ops.registry import register
from edge_runtime.ops.tensor import as_ints, norm_axis

Array = NDArray[Any]


@register("Shape", since_version=1)
def Shape(data: Array, *, start: int = 0, end: int | None = None) -> Array:
    """The input's shape as int64, optionally sliced to [start, end) (opset 15; clamped)."""
    return np.array(data.shape[start:end], dtype=np.int64)


@register("Size")
def Size(data: Array) -> Array:
    """The input's element count as an int64 scalar."""
    return np.array(data.size, dtype=np.int64)


def _sparse_to_dense(sparse: Any) -> Array:
    """A SparseTensorProto (or ndarray already densified by the loader) as a dense array."""
    if isinstance(sparse, np.ndarray):
        return sparse
    from onnx import numpy_helper

    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(sparse.dims)
    dense = np.zeros(dims, dtype=values.dtype)
    if indices.ndim == 1:  # linearised indices
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


@register("Constant")
def Constant(*, value: Array | None = None, sparse_value: Any = None, value_float: float | None = None,
             value_floats: Sequence[float] | None = None, value_int: int | None = None,
             value_ints: Sequence[int] | None = None, value_string: str | None = None,
             value_strings: Sequence[str] | None = None) -> Array:
    """The tensor held by whichever ``value*`` attribute the node sets (exactly one)."""
    if value is not None:
        return np.asarray(value)
    if sparse_value is not None:
        return _sparse_to_dense(sparse_value)
    if value_float is not None:
        return np.array(value_float, dtype=np.float32)
    if value_floats is not None:
        return np.array(value_floats, dtype=np.float32).reshape(-1)
    if value_int is not None:
        return np.array(value_int, dtype=np.int64)
    if value_ints is not None:
        return np.array(value_ints, dtype=np.int64).reshape(-1)
    if value_string is not None:
        return np.array(value_string, dtype=object)
    if value_strings is not None:
        return np.array(list(value_strings), dtype=object)
    raise InvalidModelError("Constant: the node sets none of value, sparse_value, value_float(s), "
                            "value_int(s), value_string(s); exactly one is required.")


@register("ConstantOfShape", since_version=9)
def ConstantOfShape(input: Array, *, value: Array | None = None) -> Array:
    """A tensor of shape ``input`` filled with the one-element ``value`` (default float32 0)."""
    fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value).reshape(-1)
    if fill.size != 1:
        raise InvalidModelError(f"ConstantOfShape: value must hold one element, got {fill.size}.")
    shape = as_ints(input)
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"ConstantOfShape: shape {shape} has negative dims.")
    return np.full(shape, fill[0], dtype=fill.dtype)


@register("Range", since_version=11)
def Range(start: Array, limit: Array, delta: Array, *, stash_type: int = 1) -> Array:
    """``start + i * delta`` for i in [0, max(ceil((limit - start) / delta), 0)), in start's dtype.

    ``stash_type`` (opset 27) only matters for float16/bfloat16, which are computed in float32 anyway.
    """
    dtype = np.asarray(start).dtype
    s, lim, d = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    if d == 0:
        raise InvalidInputError("Range: delta is 0; it must be nonzero.")
    count = max(int(math.ceil((float(lim) - float(s)) / float(d))), 0)
    if np.issubdtype(dtype, np.integer):  # exact integer arithmetic
        count = max(-((int(s) - int(lim)) // int(d)), 0)
        return (int(s) + np.arange(count, dtype=np.int64) * int(d)).astype(dtype)
    return (s + np.arange(count, dtype=dtype) * d).astype(dtype)


def _np_dtype(onnx_dtype: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_dtype))
    except Exception as exc:  # noqa: BLE001  (onnx raises KeyError/ValueError by version)
        raise UnsupportedDTypeError(f"EyeLike: ONNX dtype {onnx_dtype} has no numpy equivalent.") from exc


@register("EyeLike", since_version=9)
def EyeLike(input: Array, *, dtype: int | None = None, k: int = 0) -> Array:
    """A 2-D identity-like tensor of ``input``'s shape with ones on diagonal ``k``."""
    if input.ndim != 2:
        raise InvalidInputError(f"EyeLike: expected a 2-D input, got shape {input.shape}.")
    out_dtype = input.dtype if dtype is None else _np_dtype(dtype)
    return np.eye(input.shape[0], input.shape[1], k=k, dtype=out_dtype)


@register("Trilu", since_version=14)
def Trilu(input: Array, k: Array | None = None, *, upper: int = 1) -> Array:
    """Keep the upper (or lower) triangle of the last two dims, from diagonal ``k``."""
    if input.ndim < 2:
        raise InvalidInputError(f"Trilu: expected rank >= 2, got shape {input.shape}.")
    diag = int(np.asarray(k).reshape(-1)[0]) if k is not None else 0
    return np.triu(input, diag) if upper else np.tril(input, diag)


@register("NonZero", since_version=9)
def NonZero(X: Array) -> Array:
    """Indices of the nonzero entries, shape (rank, count), int64."""
    x = np.atleast_1d(X)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@register("OneHot", since_version=9)
def OneHot(indices: Array, depth: Array, values: Array, *, axis: int = -1) -> Array:
    """One-hot encode ``indices`` (negatives wrap once) into ``values`` = [off, on]."""
    n = int(np.asarray(depth).reshape(-1)[0])
    vals = np.asarray(values).reshape(-1)
    if vals.size != 2 or n < 1:
        raise InvalidInputError(f"OneHot: expected values = [off, on] and depth >= 1, got values "
                                f"{vals.tolist()} and depth {n}.")
    ind = np.asarray(indices).astype(np.int64)
    ind = np.where(ind < 0, ind + n, ind)
    axis = norm_axis(axis, ind.ndim + 1, "OneHot")
    hot = np.moveaxis(ind[..., None] == np.arange(n, dtype=np.int64), -1, axis)
    return np.where(hot, vals[1], vals[0]).astype(vals.dtype)


@register("Einsum", since_version=12)
def Einsum(*Inputs: Array, equation: str) -> Array:
    """Einstein summation via :func:`numpy.einsum` (implicit and explicit output forms)."""
    eq = equation.replace(" ", "")
    try:
        out = np.einsum(eq, *Inputs, optimize=len(Inputs) > 2)
    except ValueError as exc:
        shapes = [t.shape for t in Inputs]
        raise InvalidInputError(f"Einsum: equation '{equation}' does not fit input shapes {shapes}: {exc}") from exc
    return np.asarray(out, dtype=np.result_type(*Inputs))
