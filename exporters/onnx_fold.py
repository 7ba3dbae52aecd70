"""Fold constant per-channel shifts (``Sub``/``Add`` right after a Conv or BatchNormalization) into its bias.

A :class:`~exporters.sparsity.ShiftedReLU` (``max(x - t, 0)``) exports as ``Conv -> Sub(t) ->
Relu``. onnxruntime fuses Conv + Relu but not a Sub between them, so the deployed graph would
be slower than the original although ``Conv(x) - t`` is just ``Conv`` with bias ``b - t``. This
pass rewrites it as that Conv (a new bias initializer; the Sub disappears), leaving ``Conv ->
Relu``: the same values up to float32 rounding of ``b - t``, onnxruntime's fused kernel, and a
Relu that edge_runtime's zero detection sees. Only rewrites what is provably the same: the
shift is a constant (initializer, Constant node, or Identity of one) broadcasting per output
channel (a scalar, ``(C,)`` on a 2-D Conv's last axis is *not* per channel and is left alone),
and the Conv/BatchNormalization output has no other consumer and is not a graph output.
"""
from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import numpy_helper

_PRODUCERS = {"Conv": 2, "BatchNormalization": 2}  # op -> index of its bias input
_FLOATS = (np.float32, np.float16, np.float64)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # in topological order: an Identity follows what it copies
        if node.op_type == "Constant" and len(node.output) == 1:
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _per_channel(shift: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``shift`` as a (channels,) vector when it broadcasts per channel on a rank-``rank`` output."""
    if shift.size == 1 and shift.ndim <= rank:
        return np.full(channels, shift.reshape(()), dtype=shift.dtype)
    dims = list(shift.shape)
    while len(dims) < rank:
        dims.insert(0, 1)
    if len(dims) != rank or dims[1] != channels or any(d != 1 for i, d in enumerate(dims) if i != 1):
        return None
    return shift.reshape(channels)


def fold_bias_shifts(model: onnx.ModelProto) -> int:
    """Fold ``Conv/BatchNormalization -> Sub/Add(constant)`` into the producer's bias, in place.

    Returns:
        The number of Sub/Add nodes removed.

    Example:
        >>> from onnx import helper, TensorProto
        >>> w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
        >>> t = numpy_helper.from_array(np.array(0.5, np.float32), "t")
        >>> g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"]),
        ...                        helper.make_node("Sub", ["c", "t"], ["s"]),
        ...                        helper.make_node("Relu", ["s"], ["y"])], "g",
        ...                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        ...                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, t])
        >>> m = helper.make_model(g); fold_bias_shifts(m), [n.op_type for n in m.graph.node]
        (1, ['Conv', 'Relu'])
    """
    graph = model.graph
    consts = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    uses = collections.Counter(i for n in graph.node for i in n.input)
    uses.update(o.name for o in graph.output)
    taken = {i.name for i in graph.initializer} | set(producers)
    folded = []
    for node in graph.node:
        if node.op_type not in ("Sub", "Add") or len(node.input) != 2:
            continue
        x, c = node.input
        if node.op_type == "Add" and c not in consts and x in consts:
            x, c = c, x
        prod = producers.get(x)
        if c not in consts or prod is None or prod.op_type not in _PRODUCERS or uses[x] != 1:
            continue
        weight = consts.get(prod.input[1])  # Conv: W (C_out, ...); BatchNormalization: scale (C,)
        if weight is None or weight.dtype.type not in _FLOATS or consts[c].dtype != weight.dtype:
            continue
        rank = weight.ndim if prod.op_type == "Conv" else None
        if rank is None:  # BatchNormalization: the output rank is the input's; only scalars are safe then
            if consts[c].size != 1:
                continue
            rank = 2
        bias_at = _PRODUCERS[prod.op_type]
        shift = _per_channel(consts[c], weight.shape[0], rank)
        has_bias = len(prod.input) > bias_at and prod.input[bias_at] != ""
        if shift is None or (has_bias and prod.input[bias_at] not in consts):
            continue
        bias = consts[prod.input[bias_at]] if has_bias else np.zeros(weight.shape[0], weight.dtype)
        new = (bias.astype(np.float64) + (-1.0 if node.op_type == "Sub" else 1.0) * shift).astype(weight.dtype)
        name = f"{prod.output[0]}_shifted_bias"
        while name in taken:
            name += "_"
        taken.add(name)
        graph.initializer.append(numpy_helper.from_array(new, name))
        while len(prod.input) <= bias_at:
            prod.input.append("")
        prod.input[bias_at] = name
        prod.output[0] = node.output[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    if folded:
        _drop_dead_constants(graph)
    return len(folded)


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of ``graph`` or of its subgraphs (If/Loop/Scan bodies) reads."""
    names = {o.name for o in graph.output}
    for n in graph.node:
        names.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                names |= _reads(sub)
    return names


def _drop_dead_constants(graph: onnx.GraphProto) -> None:
    """Remove Identity/Constant nodes and initializers nothing reads any more (subgraphs included)."""
    while True:
        used = _reads(graph)
        dead = [n for n in graph.node if n.op_type in ("Identity", "Constant") and not set(n.output) & used]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = _reads(graph) | {i.name for i in graph.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
