"""Tensor layout operators: Reshape, Transpose, Concat, Split, Slice, Squeeze/Unsqueeze,
Flatten, Expand, Tile, Pad, DepthToSpace, SpaceToDepth.

Every op here is dtype-agnostic (float32, int64, int32, bool, uint8 ... alike) and keeps
its input's dtype. Shape-like inputs (``shape``, ``starts``, ``axes``, ``pads`` ...) are
int64 tensors per the spec; they are read as Python ints.

Shape/constant generators live in :mod:`edge_runtime.ops.shape`, gather/scatter in
:mod:`edge_runtime.ops.indexing`; `edge_runtime.ops` imports every family.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.ops.registry import register, register_builder

Array = NDArray[Any]


def as_ints(values: Any) -> list[int]:
    """Read a shape-like tensor (or list, or scalar) as a list of Python ints."""
    if values is None:
        return []
    return [int(v) for v in np.asarray(values).reshape(-1)]


def norm_axis(axis: int, rank: int, op: str) -> int:
    """Map ``axis`` in [-rank, rank-1] to [0, rank-1].

    Raises:
        InvalidModelError: ``axis`` is out of range for a tensor of ``rank``.
    """
    if not -rank <= axis < rank:
        raise InvalidModelError(
            f"{op}: axis {axis} is out of range for a rank-{rank} tensor; expected an axis in "
            f"[{-rank}, {rank - 1}]. Fix the node's axis/axes.")
    return axis + rank if axis < 0 else axis


# --------------------------------------------------------------------------- Reshape

def _reshape(data: Array, shape: Sequence[int], allowzero: int) -> Array:
    target = list(shape)
    if not allowzero:
        for i, dim in enumerate(target):
            if dim == 0:
                if i >= data.ndim:
                    raise InvalidInputError(
                        f"Reshape: shape {list(shape)} has 0 at position {i} (copy the input dim) but "
                        f"the input has only {data.ndim} dims {data.shape}. Fix the target shape.")
                target[i] = data.shape[i]
    try:
        return data.reshape(target)
    except ValueError as exc:
        raise InvalidInputError(
            f"Reshape: cannot reshape a tensor of shape {data.shape} ({data.size} elements) to "
            f"{list(shape)} (allowzero={allowzero}); the element counts must match and at most one "
            f"dim may be -1. Check the input shape fed to the model.") from exc


@register("Reshape", since_version=1)
def Reshape_1(data: Array, *, shape: Sequence[int] = (), consumed_inputs: Any = None) -> Array:
    """Reshape with the target shape as an attribute (opset 1-4)."""
    return _reshape(data, as_ints(shape), 0)


@register("Reshape", since_version=5)
def Reshape(data: Array, shape: Array, *, allowzero: int = 0) -> Array:
    """Reshape; a 0 in ``shape`` copies the input dim unless ``allowzero``, -1 is inferred."""
    return _reshape(data, as_ints(shape), allowzero)


@register_builder("Reshape", since_version=5)
def reshape_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """Reshape to a constant shape: the target resolved once per input shape (the op converts and
    checks the shape tensor on every call, 2 of its 2.4 us before an int8 CNN's classifier)."""
    shape = consts[1] if len(consts) > 1 else None
    if shape is None:
        return None
    shape = as_ints(shape)
    allowzero = int(dict(node.attrs).get("allowzero", 0))
    targets: dict[tuple[int, ...], tuple[int, ...]] = {}

    def run(data, *rest):
        target = targets.get(data.shape)
        if target is None:
            target = targets[data.shape] = _reshape(data, shape, allowzero).shape
        return data.reshape(target)

    return run


@register("Transpose")
def Transpose(data: Array, *, perm: Sequence[int] | None = None) -> Array:
    """Permute axes; no ``perm`` reverses them."""
    if perm is None:
        return np.transpose(data)
    if sorted(perm) != list(range(data.ndim)):
        raise InvalidModelError(
            f"Transpose: perm {list(perm)} is not a permutation of the {data.ndim} axes of a tensor "
            f"of shape {data.shape}. Fix the node's perm attribute.")
    return np.transpose(data, perm)


@register("Concat")
def Concat(*inputs: Array, axis: int = 0) -> Array:
    """Join tensors along ``axis``."""
    if not inputs:
        raise InvalidModelError("Concat: the node has no inputs; expected at least one tensor.")
    axis = norm_axis(axis, inputs[0].ndim, "Concat")
    try:
        return np.concatenate(inputs, axis=axis)
    except ValueError as exc:
        shapes = [t.shape for t in inputs]
        raise InvalidInputError(
            f"Concat: input shapes {shapes} differ outside axis {axis}; all inputs must share every "
            f"other dim. Check the shapes fed to the model.") from exc


# --------------------------------------------------------------------------- Split

def _split(data: Array, axis: int, sizes: Sequence[int] | None, count: int | None) -> tuple[Array, ...]:
    axis = norm_axis(axis, data.ndim, "Split")
    dim = data.shape[axis]
    if sizes is None or len(sizes) == 0:
        if not count:
            raise InvalidModelError(
                "Split: neither 'split' sizes nor the number of outputs is known; give the node a "
                "'split' input/attribute or 'num_outputs' (opset 18).")
        chunk = -(-dim // count)  # ceil: the last chunk may be smaller (opset 18)
        sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(count)]
    if sum(sizes) != dim or any(s < 0 for s in sizes):
        raise InvalidInputError(
            f"Split: sizes {list(sizes)} do not add up to dim {dim} of axis {axis} (input shape "
            f"{data.shape}). Fix the split sizes.")
    cuts = np.cumsum(sizes)[:-1]
    return tuple(np.split(data, cuts, axis=axis))


@register("Split", since_version=2)
def Split_2(input: Array, *, axis: int = 0, split: Sequence[int] | None = None,
            _num_outputs: int | None = None) -> tuple[Array, ...]:
    """Split with sizes as an attribute (opset 2-12); equal parts need the output count."""
    return _split(input, axis, list(split) if split else None, _num_outputs)


@register("Split", since_version=13)
def Split_13(input: Array, split: Array | None = None, *, axis: int = 0,
             _num_outputs: int | None = None) -> tuple[Array, ...]:
    """Split with sizes as an optional input (opset 13-17)."""
    return _split(input, axis, as_ints(split) if split is not None else None, _num_outputs)


@register("Split", since_version=18)
def Split(input: Array, split: Array | None = None, *, axis: int = 0,
          num_outputs: int | None = None, _num_outputs: int | None = None) -> tuple[Array, ...]:
    """Split by sizes, or into ``num_outputs`` parts (the last one may be smaller)."""
    count = num_outputs if num_outputs is not None else _num_outputs
    return _split(input, axis, as_ints(split) if split is not None else None, count)


def _split_builder(fn: Callable[..., tuple[Array, ...]]) -> Callable[..., Any]:
    """A builder that tells a Split implementation how many outputs its node has."""
    def build(node: Any, consts: Any, ctx: Any) -> Callable[..., tuple[Array, ...]]:
        attrs = dict(node.attrs)
        count = len(node.outputs)
        return lambda *inputs: fn(*inputs, **attrs, _num_outputs=count)
    return build


register_builder("Split", since_version=2)(_split_builder(Split_2))
register_builder("Split", since_version=13)(_split_builder(Split_13))
register_builder("Split", since_version=18)(_split_builder(Split))


# --------------------------------------------------------------------------- Slice

def _slice_for(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice clamping for one axis, as a Python slice."""
    if step == 0:
        raise InvalidModelError("Slice: a step of 0 is invalid; steps must be nonzero.")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


def _slice(data: Array, starts: list[int], ends: list[int], axes: list[int] | None,
           steps: list[int] | None) -> Array:
    if axes is None or len(axes) == 0:
        axes = list(range(len(starts)))
    steps = steps if steps else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise InvalidModelError(
            f"Slice: starts {starts}, ends {ends}, axes {axes}, steps {steps} must have equal "
            "lengths. Fix the node's inputs.")
    index: list[slice] = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = norm_axis(axis, data.ndim, "Slice")
        index[axis] = _slice_for(start, end, step, data.shape[axis])
    return data[tuple(index)]


@register("Slice", since_version=1)
def Slice_1(data: Array, *, starts: Sequence[int] = (), ends: Sequence[int] = (),
            axes: Sequence[int] | None = None) -> Array:
    """Slice with starts/ends/axes as attributes (opset 1-9)."""
    return _slice(data, list(starts), list(ends), list(axes) if axes else None, None)


@register("Slice", since_version=10)
def Slice(data: Array, starts: Array, ends: Array, axes: Array | None = None,
          steps: Array | None = None) -> Array:
    """Slice with clamped starts/ends, optional axes and (possibly negative) steps."""
    return _slice(data, as_ints(starts), as_ints(ends),
                  as_ints(axes) if axes is not None else None,
                  as_ints(steps) if steps is not None else None)


# --------------------------------------------------------------------------- Squeeze / Unsqueeze

def _squeeze(data: Array, axes: list[int] | None) -> Array:
    if not axes:
        return np.squeeze(data)
    norm = tuple(norm_axis(a, data.ndim, "Squeeze") for a in axes)
    bad = [a for a in norm if data.shape[a] != 1]
    if bad:
        raise InvalidInputError(
            f"Squeeze: axes {bad} of a tensor of shape {data.shape} are not of size 1; only size-1 "
            "dims can be squeezed. Fix the axes or the input shape.")
    return np.squeeze(data, axis=norm)


def _unsqueeze(data: Array, axes: list[int]) -> Array:
    rank = data.ndim + len(axes)
    norm = sorted(norm_axis(a, rank, "Unsqueeze") for a in axes)
    if len(set(norm)) != len(norm):
        raise InvalidModelError(f"Unsqueeze: axes {axes} repeat an axis; each axis may appear once.")
    return np.expand_dims(data, tuple(norm))


@register("Squeeze", since_version=1)
def Squeeze_1(data: Array, *, axes: Sequence[int] | None = None) -> Array:
    """Squeeze with axes as an attribute (opset 1-12)."""
    return _squeeze(data, list(axes) if axes else None)


@register("Squeeze", since_version=13)
def Squeeze(data: Array, axes: Array | None = None) -> Array:
    """Remove size-1 dims (all of them when ``axes`` is missing)."""
    return _squeeze(data, as_ints(axes) if axes is not None else None)


@register("Unsqueeze", since_version=1)
def Unsqueeze_1(data: Array, *, axes: Sequence[int] = ()) -> Array:
    """Unsqueeze with axes as an attribute (opset 1-12)."""
    return _unsqueeze(data, list(axes))


@register("Unsqueeze", since_version=13)
def Unsqueeze(data: Array, axes: Array) -> Array:
    """Insert size-1 dims at ``axes`` (indices into the output's rank)."""
    return _unsqueeze(data, as_ints(axes))


@register("Flatten")
def Flatten(input: Array, *, axis: int = 1) -> Array:
    """Reshape to 2-D: dims before ``axis`` become rows, the rest columns."""
    rank = input.ndim
    if not -rank <= axis <= rank:
        raise InvalidModelError(
            f"Flatten: axis {axis} is out of range for a rank-{rank} tensor; expected [{-rank}, {rank}].")
    axis = axis + rank if axis < 0 else axis
    # math.prod, not np.prod: two numpy reductions made this view cost 6 us before a classifier's Gemm
    return input.reshape(math.prod(input.shape[:axis]), math.prod(input.shape[axis:]))


# --------------------------------------------------------------------------- Expand / Tile

@register("Expand", since_version=8)
def Expand(input: Array, shape: Array) -> Array:
    """Broadcast ``input`` against ``shape`` (numpy rules, both ways)."""
    target = as_ints(shape)
    try:
        out_shape = np.broadcast_shapes(input.shape, tuple(target))
    except ValueError as exc:
        raise InvalidInputError(
            f"Expand: input shape {input.shape} cannot broadcast with shape {target}; dims must be "
            "equal or 1. Check the input shape.") from exc
    return np.broadcast_to(input, out_shape).copy()


@register("Tile", since_version=6)
def Tile(input: Array, repeats: Array) -> Array:
    """Repeat the tensor ``repeats[i]`` times along axis i."""
    reps = as_ints(repeats)
    if len(reps) != input.ndim or any(r < 0 for r in reps):
        raise InvalidInputError(
            f"Tile: repeats {reps} must be {input.ndim} non-negative ints for an input of shape "
            f"{input.shape}.")
    return np.tile(input, reps)


# --------------------------------------------------------------------------- Pad

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad(data: Array, pads: list[int], mode: str, value: Any, axes: list[int] | None) -> Array:
    if mode not in _PAD_MODES:
        raise InvalidModelError(f"Pad: mode '{mode}' is not one of {_PAD_MODES}.")
    axes = [norm_axis(a, data.ndim, "Pad") for a in axes] if axes else list(range(data.ndim))
    if len(pads) != 2 * len(axes):
        raise InvalidModelError(
            f"Pad: {len(pads)} pads given for {len(axes)} axes; expected 2 * {len(axes)} "
            "(all begins, then all ends).")
    width = [(0, 0)] * data.ndim
    crop: list[slice] = [slice(None)] * data.ndim
    for i, axis in enumerate(axes):
        begin, end = pads[i], pads[len(axes) + i]
        crop[axis] = slice(max(-begin, 0), data.shape[axis] - max(-end, 0))
        width[axis] = (max(begin, 0), max(end, 0))
    data = data[tuple(crop)]  # negative pads remove elements first
    if mode == "constant":
        fill = np.asarray(0 if value is None else value).reshape(-1)
        fill_value = fill[0] if fill.size else 0
        return np.pad(data, width, mode="constant", constant_values=fill_value).astype(data.dtype, copy=False)
    if data.size == 0 and any(w != (0, 0) for w in width):
        raise InvalidInputError(f"Pad: mode '{mode}' cannot pad an empty tensor of shape {data.shape}.")
    return np.pad(data, width, mode=mode)


@register("Pad", since_version=2)
def Pad_2(data: Array, *, mode: str = "constant", pads: Sequence[int] = (), value: float = 0.0) -> Array:
    """Pad with pads and value as attributes (opset 2-10)."""
    return _pad(data, list(pads), mode, value, None)


@register("Pad", since_version=11)
def Pad_11(data: Array, pads: Array, constant_value: Array | None = None, *, mode: str = "constant") -> Array:
    """Pad with pads and the constant as inputs (opset 11-17)."""
    return _pad(data, as_ints(pads), mode, constant_value, None)


@register("Pad", since_version=18)
def Pad(data: Array, pads: Array, constant_value: Array | None = None, axes: Array | None = None,
        *, mode: str = "constant") -> Array:
    """Pad (negative pads crop) in constant/reflect/edge/wrap mode, optionally on some axes."""
    return _pad(data, as_ints(pads), mode, constant_value, as_ints(axes) if axes is not None else None)


# --------------------------------------------------------------------------- DepthToSpace / SpaceToDepth

def _check_4d(x: Array, op: str) -> tuple[int, int, int, int]:
    if x.ndim != 4:
        raise InvalidInputError(f"{op}: expected a 4-D NCHW input, got shape {x.shape}.")
    b, c, h, w = x.shape
    return b, c, h, w


@register("DepthToSpace", since_version=1)
def DepthToSpace(input: Array, *, blocksize: int, mode: str = "DCR") -> Array:
    """Move channel blocks into spatial blocks (DCR: depth-column-row, CRD: column-row-depth)."""
    b, c, h, w = _check_4d(input, "DepthToSpace")
    bs = blocksize
    if c % (bs * bs):
        raise InvalidInputError(f"DepthToSpace: channels {c} are not divisible by blocksize^2 = {bs * bs}.")
    oc = c // (bs * bs)
    if mode == "DCR":
        tmp = input.reshape(b, bs, bs, oc, h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        tmp = input.reshape(b, oc, bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise InvalidModelError(f"DepthToSpace: mode '{mode}' is not 'DCR' or 'CRD'.")
    return tmp.reshape(b, oc, h * bs, w * bs)


@register("SpaceToDepth", since_version=1)
def SpaceToDepth(input: Array, *, blocksize: int, mode: str = "DCR") -> Array:
    """Move spatial blocks into channels (the inverse of DepthToSpace in the same ``mode``).

    ``mode`` arrived in opset 28; older models always mean DCR.
    """
    b, c, h, w = _check_4d(input, "SpaceToDepth")
    bs = blocksize
    if h % bs or w % bs:
        raise InvalidInputError(f"SpaceToDepth: spatial dims {(h, w)} are not divisible by blocksize {bs}.")
    tmp = input.reshape(b, c, h // bs, bs, w // bs, bs)
    if mode == "DCR":
        tmp = tmp.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        tmp = tmp.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise InvalidModelError(f"SpaceToDepth: mode '{mode}' is not 'DCR' or 'CRD'.")
    return tmp.reshape(b, c * bs * bs, h // bs, w // bs)

