"""Reductions and axis-wise ops: Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax, Hardmax, CumSum, TopK.

Reduce* take ``axes`` as an attribute up to opset 17 (ReduceSum up to 12) and as an
optional int64 input afterwards, with ``noop_with_empty_axes``; both signatures are
registered. Output dtypes follow the input (numpy would widen int32 sums and turn
integer means into float64; we pin the dtype).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.kernels.softmax import softmax_rows
from edge_runtime.ops.elementwise import ANY, FLOAT, FLOATS, NUMERIC, check_dtype
from edge_runtime.ops.registry import register

Array = NDArray[Any]
Reducer = Callable[[Array, tuple[int, ...]], Array]


def _norm_axes(op: str, axes: Any, ndim: int) -> tuple[int, ...]:
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    if any(not -ndim <= a < max(ndim, 1) for a in axes):
        raise InvalidModelError(f"{op}: axes {axes} out of range for input rank {ndim}; expected values in "
                                f"[-{ndim}, {ndim}). Re-export the model or check the input rank.")
    return tuple(sorted({a % ndim for a in axes})) if ndim else ()


def _empty_identity(data: Array, axes: tuple[int, ...], keepdims: int, value: Any) -> Array:
    shape = [1 if i in axes else d for i, d in enumerate(data.shape)]
    if not keepdims:
        shape = [d for i, d in enumerate(data.shape) if i not in axes]
    return np.full(shape, value, dtype=data.dtype)


def _extreme(data: Array, largest: bool) -> Any:
    if data.dtype.kind == "f":
        return -np.inf if largest else np.inf
    if data.dtype.kind == "b":
        return not largest
    info = np.iinfo(data.dtype)
    return info.min if largest else info.max


def _log_sum_exp(x: Array, axes: tuple[int, ...]) -> Array:
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, np.float32(0))
    return np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m


#: op -> (reducer over axes with keepdims=True, value of an empty reduction or None, dtypes)
_REDUCERS: dict[str, tuple[Reducer, Any, tuple[np.dtype, ...]]] = {
    "ReduceSum": (lambda x, a: np.sum(x, axis=a, keepdims=True, dtype=x.dtype), 0, NUMERIC),
    "ReduceMean": (lambda x, a: np.mean(x, axis=a, keepdims=True), np.nan, NUMERIC),
    "ReduceMax": (lambda x, a: np.max(x, axis=a, keepdims=True), "max", ANY),
    "ReduceMin": (lambda x, a: np.min(x, axis=a, keepdims=True), "min", ANY),
    "ReduceProd": (lambda x, a: np.prod(x, axis=a, keepdims=True, dtype=x.dtype), 1, NUMERIC),
    "ReduceL1": (lambda x, a: np.sum(np.abs(x), axis=a, keepdims=True, dtype=x.dtype), 0, NUMERIC),
    "ReduceL2": (lambda x, a: np.sqrt(np.sum(np.square(x), axis=a, keepdims=True, dtype=x.dtype)), 0, NUMERIC),
    "ReduceSumSquare": (lambda x, a: np.sum(np.square(x), axis=a, keepdims=True, dtype=x.dtype), 0, NUMERIC),
    "ReduceLogSum": (lambda x, a: np.log(np.sum(x, axis=a, keepdims=True)), -np.inf, FLOATS),
    "ReduceLogSumExp": (_log_sum_exp, -np.inf, FLOATS),
}


def reduce(op: str, data: Array, axes: Any, keepdims: int, noop_with_empty_axes: int) -> Array:
    """Apply the reduction ``op`` over ``axes`` (None/empty: all axes, or identity when noop).

    Raises:
        UnsupportedDTypeError: data's dtype is not accepted by ``op``.
        InvalidModelError: an axis is out of range.
    """
    fn, empty_value, allowed = _REDUCERS[op]
    check_dtype(op, data, allowed)
    if axes is None or np.asarray(axes).size == 0:
        if noop_with_empty_axes:
            return data
        axes_t = tuple(range(data.ndim))
    else:
        axes_t = _norm_axes(op, axes, data.ndim)
    if any(data.shape[a] == 0 for a in axes_t):
        if empty_value in ("max", "min"):
            empty_value = _extreme(data, empty_value == "max")
        return _empty_identity(data, axes_t, keepdims, empty_value)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = fn(data, axes_t)
    if not keepdims:
        out = out.reshape([d for i, d in enumerate(out.shape) if i not in axes_t])
    return np.asarray(out).astype(data.dtype, copy=False)


def _register_reduce(op: str, input_since: int) -> None:
    def with_attr(data: Array, *, axes: list[int] | None = None, keepdims: int = 1) -> Array:
        return reduce(op, data, axes, keepdims, 0)

    def with_input(data: Array, axes: Array | None = None, *, keepdims: int = 1,
                   noop_with_empty_axes: int = 0) -> Array:
        return reduce(op, data, axes, keepdims, noop_with_empty_axes)

    for fn, since, doc in ((with_attr, 1, "axes attribute"), (with_input, input_since, "axes input")):
        fn.__name__ = fn.__qualname__ = op
        fn.__doc__ = f"ONNX {op} ({doc}); see :func:`reduce`."
        register(op, since_version=since)(fn)


for _op in _REDUCERS:
    _register_reduce(_op, 13 if _op == "ReduceSum" else 18)


# ---------------------------------------------------------------- ArgMax / ArgMin

def _arg(op: str, data: Array, axis: int, keepdims: int, select_last_index: int, largest: bool) -> Array:
    check_dtype(op, data, NUMERIC)
    if not -data.ndim <= axis < data.ndim:
        raise InvalidModelError(f"{op}: axis={axis} is out of range for input rank {data.ndim}; expected "
                                f"-{data.ndim} <= axis < {data.ndim}. Re-export the model.")
    find = np.argmax if largest else np.argmin
    if select_last_index:
        flipped = np.flip(data, axis=axis)
        idx = data.shape[axis] - 1 - find(flipped, axis=axis, keepdims=True)
    else:
        idx = find(data, axis=axis, keepdims=True)
    idx = idx.astype(np.int64, copy=False)
    return idx if keepdims else np.squeeze(idx, axis=axis)


@register("ArgMax", since_version=1)
def ArgMax(data: Array, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    """Index (int64) of the largest value along ``axis``; first (or last) on ties."""
    return _arg("ArgMax", data, axis, keepdims, select_last_index, True)


@register("ArgMin", since_version=1)
def ArgMin(data: Array, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    """Index (int64) of the smallest value along ``axis``; first (or last) on ties."""
    return _arg("ArgMin", data, axis, keepdims, select_last_index, False)


# ---------------------------------------------------------------- Softmax / LogSoftmax

def _softmax(x: Array, axis: int, log: bool) -> Array:
    if not log and x.size and axis % x.ndim == x.ndim - 1:  # rows: one numba pass (kernels/softmax.py)
        return softmax_rows(x.reshape(-1, x.shape[-1])).reshape(x.shape)
    m = np.max(x, axis=axis, keepdims=True)
    e = x - m
    if log:
        e -= np.log(np.sum(np.exp(e), axis=axis, keepdims=True))
        return e
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def _softmax_v13(op: str, x: Array, axis: int, log: bool) -> Array:
    check_dtype(op, x, FLOAT)
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise InvalidModelError(f"{op}: axis={axis} is out of range for input rank {x.ndim}; expected "
                                f"-{x.ndim} <= axis < {x.ndim}. Re-export the model.")
    return _softmax(x, axis, log)


def _coerced_rows(op: str, x: Array, axis: int) -> int:
    """Opset 1-12 Softmax/Hardmax: the row count of ``x`` coerced to 2-D at ``axis`` (-1 is the last dim).

    Raises:
        InvalidModelError: ``axis`` is out of range for ``x``'s rank.
    """
    if not -x.ndim <= axis <= x.ndim:
        raise InvalidModelError(f"{op}: axis={axis} is out of range for input rank {x.ndim}; expected "
                                f"-{x.ndim} <= axis <= {x.ndim}. Re-export the model.")
    return int(np.prod(x.shape[:axis + x.ndim if axis < 0 else axis]))


def _softmax_2d(op: str, x: Array, axis: int, log: bool) -> Array:
    """Opset 1-12 semantics: coerce to 2-D (prod(shape[:axis]), prod(shape[axis:])), softmax rows."""
    check_dtype(op, x, FLOAT)
    return _softmax(x.reshape(_coerced_rows(op, x, axis), -1), 1, log).reshape(x.shape)


@register("Softmax", since_version=1)
def Softmax_1(input: Array, *, axis: int = 1) -> Array:
    """Softmax over the flattened dims axis..rank-1 (opset 1-12)."""
    return _softmax_2d("Softmax", input, axis, False)


@register("Softmax", since_version=13)
def Softmax(input: Array, *, axis: int = -1) -> Array:
    """Softmax along one axis (opset 13+)."""
    return _softmax_v13("Softmax", input, axis, False)


@register("LogSoftmax", since_version=1)
def LogSoftmax_1(input: Array, *, axis: int = 1) -> Array:
    """LogSoftmax over the flattened dims axis..rank-1 (opset 1-12)."""
    return _softmax_2d("LogSoftmax", input, axis, True)


@register("LogSoftmax", since_version=13)
def LogSoftmax(input: Array, *, axis: int = -1) -> Array:
    """LogSoftmax along one axis (opset 13+)."""
    return _softmax_v13("LogSoftmax", input, axis, True)


# ---------------------------------------------------------------- CumSum / TopK

@register("CumSum", since_version=11)
def CumSum(x: Array, axis: Array, *, exclusive: int = 0, reverse: int = 0) -> Array:
    """Cumulative sum along ``axis`` (a scalar tensor), optionally exclusive and/or reversed."""
    check_dtype("CumSum", x, NUMERIC)
    ax = _norm_axes("CumSum", axis, x.ndim)[0]
    y = np.flip(x, axis=ax) if reverse else x
    out = np.cumsum(y, axis=ax, dtype=x.dtype)
    if exclusive:
        out = np.roll(out, 1, axis=ax)
        out[(slice(None),) * ax + (0,)] = 0
    return np.flip(out, axis=ax) if reverse else out


def _topk(x: Array, k: int, axis: int, largest: int) -> tuple[Array, Array]:
    check_dtype("TopK", x, NUMERIC)
    if not -x.ndim <= axis < x.ndim or not 0 <= k <= x.shape[axis]:
        raise InvalidInputError(
            f"TopK: k={k} along axis {axis} of an input of shape {x.shape}; expected 0 <= k <= the axis "
            f"length and -rank <= axis < rank. Check the K input and the input shape.")
    # largest first: negate floats; ~x reverses any integer order without overflow (-(-128) wraps in int8)
    keys = x if not largest or x.dtype.kind == "b" else (~x if x.dtype.kind in "iu" else -x)
    idx = np.argsort(keys, axis=axis, kind="stable")  # ties: lower index first, as ONNX specifies
    idx = np.take(idx, np.arange(k), axis=axis).astype(np.int64, copy=False)
    return np.take_along_axis(x, idx, axis=axis), idx


@register("TopK", since_version=1)
def TopK_1(X: Array, *, axis: int = -1, k: int) -> tuple[Array, Array]:
    """The k largest values and their int64 indices along ``axis`` (k as attribute, opset 1-9)."""
    return _topk(X, int(k), axis, 1)


@register("TopK", since_version=10)
def TopK_10(X: Array, K: Array, *, axis: int = -1) -> tuple[Array, Array]:
    """The K largest values and indices along ``axis`` (K as a 1-element input, opset 10)."""
    return _topk(X, int(np.asarray(K).reshape(-1)[0]), axis, 1)


@register("TopK", since_version=11)
def TopK(X: Array, K: Array, *, axis: int = -1, largest: int = 1, sorted: int = 1) -> tuple[Array, Array]:
    """The K largest (or smallest) values and int64 indices along ``axis``, sorted (opset 11+)."""
    return _topk(X, int(np.asarray(K).reshape(-1)[0]), axis, largest)


# ---------------------------------------------------------------- Hardmax

def _hardmax(x: Array, axis: int) -> Array:
    """1 at the first largest value along ``axis``, 0 elsewhere.

    NaNs are skipped (a row of NaNs is all 0), which is what onnxruntime does for most rows: it
    takes the row maximum with a SIMD reduction, then marks the first element equal to it, and
    whether a NaN wins that reduction depends on its position and the row length.
    """
    out = np.zeros_like(x)
    if x.size:
        hit = x == np.fmax.reduce(x, axis=axis, keepdims=True)
        np.put_along_axis(out, np.argmax(hit, axis=axis, keepdims=True), 1, axis=axis)
        out *= np.any(hit, axis=axis, keepdims=True)
    return out


@register("Hardmax", since_version=1)
def Hardmax_1(input: Array, *, axis: int = 1) -> Array:
    """Hardmax over the flattened dims axis..rank-1 (opset 1-12)."""
    check_dtype("Hardmax", input, FLOATS)
    return _hardmax(input.reshape(_coerced_rows("Hardmax", input, axis), -1), 1).reshape(input.shape)


@register("Hardmax", since_version=13)
def Hardmax(input: Array, *, axis: int = -1) -> Array:
    """One-hot of the first largest value along one axis (opset 13+)."""
    check_dtype("Hardmax", input, FLOATS)
    if not -input.ndim <= axis < max(input.ndim, 1):
        raise InvalidModelError(f"Hardmax: axis={axis} is out of range for input rank {input.ndim}; expected "
                                f"-{input.ndim} <= axis < {input.ndim}. Re-export the model.")
    return _hardmax(input, axis)
