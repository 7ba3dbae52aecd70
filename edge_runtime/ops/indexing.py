"""Gather/scatter operators: Gather, GatherElements, GatherND, ScatterND, ScatterElements
(and the deprecated Scatter), and the selections Compress and ReverseSequence.

Negative indices count from the end of their axis, as the spec allows; an index out of
range raises :class:`InvalidInputError`. Scatter ops never modify their ``data`` input.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.ops.registry import register
from edge_runtime.ops.tensor import norm_axis

Array = NDArray[Any]

#: Scatter reductions -> the ufunc whose ``.at`` accumulates duplicates in order.
_REDUCTIONS: dict[str, Callable[..., Any]] = {
    "add": np.add.at, "mul": np.multiply.at, "max": np.maximum.at, "min": np.minimum.at,
}


def _wrap(indices: Array, dim: int, op: str) -> Array:
    """Map indices in [-dim, dim-1] to [0, dim-1] as int64.

    Raises:
        InvalidInputError: an index lies outside [-dim, dim-1].
    """
    idx = np.asarray(indices).astype(np.int64, copy=False)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise InvalidInputError(
            f"{op}: index values in [{idx.min()}, {idx.max()}] are out of range for an axis of size "
            f"{dim}; expected [{-dim}, {dim - 1}]. Check the indices fed to the model.")
    return np.where(idx < 0, idx + dim, idx)


@register("Gather", since_version=1)
def Gather(data: Array, indices: Array, *, axis: int = 0) -> Array:
    """Take entries of ``data`` along ``axis``; output shape replaces that axis by indices' shape.

    A scalar index returns a basic-indexing view (no copy): q/k/v splits of a transposed
    (3, B, H, T, hd) tensor cost a strided copy each with ``np.take``, while the MatMul
    that consumes them packs its operands anyway. Views are safe here because no kernel
    writes into its inputs (Reshape and Transpose return views too).
    """
    axis = norm_axis(axis, data.ndim, "Gather")
    if np.ndim(indices) == 0:
        i, dim = int(indices), data.shape[axis]
        if not -dim <= i < dim:
            _wrap(indices, dim, "Gather")  # raises the out-of-range error
        return data[(slice(None),) * axis + (i % dim,)]
    idx = _wrap(indices, data.shape[axis], "Gather")
    return np.asarray(np.take(data, idx, axis=axis))


@register("GatherElements", since_version=11)
def GatherElements(data: Array, indices: Array, *, axis: int = 0) -> Array:
    """``out[i][j][k] = data[index[i][j][k]][j][k]`` for axis 0 (and likewise for others)."""
    axis = norm_axis(axis, data.ndim, "GatherElements")
    idx = _wrap(indices, data.shape[axis], "GatherElements")
    if idx.ndim != data.ndim:
        raise InvalidInputError(f"GatherElements: indices rank {idx.ndim} differs from data rank {data.ndim}.")
    if any(i > d for k, (i, d) in enumerate(zip(idx.shape, data.shape)) if k != axis):
        raise InvalidInputError(f"GatherElements: indices shape {idx.shape} exceeds data shape {data.shape} "
                                f"outside axis {axis}.")
    where = list(np.indices(idx.shape, sparse=True))  # indices may be smaller than data off-axis
    where[axis] = idx
    return data[tuple(where)]


def _nd_index(data: Array, indices: Array, batch_dims: int, op: str) -> tuple[Array, ...]:
    """Advanced-index tuple into ``data`` for GatherND/ScatterND-style indices.

    The tuple indexes ``data`` reshaped to (batch, *data.shape[batch_dims:]).
    """
    idx = np.asarray(indices).astype(np.int64, copy=False)
    k = idx.shape[-1]
    if k > data.ndim - batch_dims:
        raise InvalidInputError(
            f"{op}: index tuples of length {k} exceed the {data.ndim - batch_dims} indexable dims of "
            f"data {data.shape} (batch_dims={batch_dims}).")
    batch = int(np.prod(data.shape[:batch_dims], dtype=np.int64))
    flat = idx.reshape(batch, -1, k)  # (B, M, k)
    parts = [np.arange(batch, dtype=np.int64)[:, None]]
    for j in range(k):
        parts.append(_wrap(flat[..., j], data.shape[batch_dims + j], op))
    return tuple(parts)


@register("GatherND", since_version=11)
def GatherND(data: Array, indices: Array, *, batch_dims: int = 0) -> Array:
    """Gather slices of ``data`` addressed by the last dim of ``indices`` (after batch dims)."""
    if data.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise InvalidInputError(f"GatherND: the first {batch_dims} dims of data {data.shape} and indices "
                                f"{indices.shape} must match.")
    k = indices.shape[-1]
    batch = int(np.prod(data.shape[:batch_dims], dtype=np.int64))
    picked = data.reshape(batch, *data.shape[batch_dims:])[_nd_index(data, indices, batch_dims, "GatherND")]
    out_shape = indices.shape[:-1] + data.shape[batch_dims + k:]
    return np.asarray(picked).reshape(out_shape)


@register("ScatterND", since_version=11)
def ScatterND(data: Array, indices: Array, updates: Array, *, reduction: str = "none") -> Array:
    """A copy of ``data`` with slices at ``indices`` replaced (or reduced) by ``updates``."""
    k = indices.shape[-1]
    expected = indices.shape[:-1] + data.shape[k:]
    if updates.shape != expected:
        raise InvalidInputError(f"ScatterND: updates shape {updates.shape} should be {expected} "
                                f"for data {data.shape} and indices {indices.shape}.")
    out = data.copy()
    view = out.reshape(1, *out.shape)  # batch of one for _nd_index
    where = _nd_index(data, indices, 0, "ScatterND")
    vals = updates.reshape(1, -1, *data.shape[k:])
    _scatter(view, where, vals, reduction, "ScatterND")
    return out


def _scatter(out: Array, where: tuple[Array, ...], vals: Array, reduction: str, op: str) -> None:
    if reduction == "none":
        out[where] = vals
        return
    fn = _REDUCTIONS.get(reduction)
    if fn is None:
        raise InvalidModelError(f"{op}: reduction '{reduction}' is not one of none, {', '.join(_REDUCTIONS)}.")
    fn(out, where, vals)


@register("ScatterElements", since_version=11)
def ScatterElements(data: Array, indices: Array, updates: Array, *, axis: int = 0,
                    reduction: str = "none") -> Array:
    """A copy of ``data`` with ``out[..., indices[i,j,k], ...] = updates[i,j,k]`` along ``axis``."""
    axis = norm_axis(axis, data.ndim, "ScatterElements")
    if indices.shape != updates.shape or indices.ndim != data.ndim:
        raise InvalidInputError(f"ScatterElements: indices {indices.shape} and updates {updates.shape} "
                                f"must have equal shapes of data's rank {data.ndim}.")
    where = list(np.indices(indices.shape, sparse=True))
    where[axis] = _wrap(indices, data.shape[axis], "ScatterElements")
    out = data.copy()
    _scatter(out, tuple(where), updates, reduction, "ScatterElements")
    return out


@register("Scatter", since_version=9)
def Scatter(data: Array, indices: Array, updates: Array, *, axis: int = 0) -> Array:
    """Deprecated alias of ScatterElements (opset 9-10)."""
    return ScatterElements(data, indices, updates, axis=axis)


@register("Compress", since_version=9)
def Compress(input: Array, condition: Array, *, axis: int | None = None) -> Array:
    """The slices of ``input`` along ``axis`` (the flattened input when absent) where ``condition`` holds.

    ``condition`` may be shorter than the axis: the slices past its end are dropped.

    Raises:
        InvalidInputError: ``condition`` is longer than the axis.
    """
    cond = np.asarray(condition).reshape(-1).astype(bool, copy=False)
    data = input.reshape(-1) if axis is None else input
    axis = 0 if axis is None else norm_axis(axis, input.ndim, "Compress")
    if cond.size > data.shape[axis]:
        raise InvalidInputError(f"Compress: condition has {cond.size} entries for an axis of size "
                                f"{data.shape[axis]}; expected at most {data.shape[axis]}.")
    return np.compress(cond, data, axis=axis)


@register("ReverseSequence", since_version=10)
def ReverseSequence(input: Array, sequence_lens: Array, *, batch_axis: int = 1, time_axis: int = 0) -> Array:
    """Each batch entry's first ``sequence_lens[b]`` steps along ``time_axis`` reversed, the rest kept.

    Raises:
        InvalidModelError: the axes are not 0 and 1; InvalidInputError: lengths do not fit the input.
    """
    if {batch_axis, time_axis} != {0, 1} or input.ndim < 2:
        raise InvalidModelError(f"ReverseSequence: batch_axis={batch_axis}, time_axis={time_axis} on a rank-"
                                f"{input.ndim} input; expected axes 0 and 1 (one each) of a rank >= 2 tensor.")
    steps, batch = input.shape[time_axis], input.shape[batch_axis]
    lens = np.asarray(sequence_lens, np.int64).reshape(-1)
    if lens.shape != (batch,) or (lens.size and (lens.min() < 0 or lens.max() > steps)):
        raise InvalidInputError(f"ReverseSequence: sequence_lens {lens.tolist()} for input {input.shape}; expected "
                                f"{batch} lengths in [0, {steps}].")
    t = np.arange(steps)[:, None]
    src = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)                    # (T, B)
    src = src if time_axis == 0 else src.T
    index = np.broadcast_to(src.reshape(src.shape + (1,) * (input.ndim - 2)), input.shape)
    return np.take_along_axis(input, index, axis=time_axis)
