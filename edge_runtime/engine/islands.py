"""Sparse islands: which Conv/Gemm/MatMul nodes edge_runtime may run itself, and how.

A candidate is a Conv (2-D, group 1), Gemm or MatMul with constant float32 weights whose input
can hold exact zeros (the exporter annotated the layer, or its input comes from a ReLU-family
op through layout ops: :func:`edge_runtime.zeros.zero_producing`). Its island absorbs what
the runtime's fusion passes fold into it (a BatchNormalization, a bias Add, a Relu / Clip /
LeakyRelu, a ThresholdedRelu or an exported FATReLU), so the zero-skipping kernel applies them in its epilogue.

An island is prepared once: the runtime's passes turn the island's nodes into one fused node
whose prepared layer (:mod:`edge_runtime.prepared`) builds its sparse kernel from the decoded weights. Its
dense path (:func:`dense_path`): a Gemm island's is numpy BLAS over the sparse kernel's own
weight layout, so its weights are held once; a Conv / MatMul island's is its nodes as a
one-island onnxruntime session (onnxruntime's convs beat any numpy im2col).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

import numpy as np
import onnx

from edge_runtime import zeros
from edge_runtime.engine.partition import constants, node_names
from edge_runtime.graph import Node
from edge_runtime.onnx_io import attributes

log = logging.getLogger(__name__)

ANCHORS = ("Conv", "Gemm", "MatMul")
_ACTS = ("Relu", "Clip", "LeakyRelu", "ThresholdedRelu")
#: Constants up to this many elements are decoded for the zero-producer check (Clip bounds).
_SMALL_CONST = 16


@dataclass(frozen=True)
class Candidate:
    """A node group that may become an island: ``nodes[0]`` is the Conv/Gemm/MatMul."""

    name: str
    nodes: tuple[int, ...]
    input: str
    output: str
    annotated_density: float | None


def candidates(model: onnx.ModelProto, annotations: Mapping[str, Mapping[str, Any]], mode: str) -> list[Candidate]:
    """The island candidates of ``model`` for sparsity ``mode`` ("auto" or "force").

    In "auto" a layer qualifies when the exporter annotated it or its input is produced by a
    ReLU-family op, and it has at least :data:`edge_runtime.zeros.MIN_SPARSE_WEIGHTS` weights; "force"
    takes every layer a sparse kernel supports. The caller checks that the input is float32
    (:func:`float_input`), which needs shape inference, only when there are candidates.
    """
    graph = model.graph
    names = node_names(graph)
    inits = constants(graph)
    ir_nodes = _Producers(graph, names)
    small = {k: onnx.numpy_helper.to_array(t) for k, t in inits.items() if _size(t) <= _SMALL_CONST}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for x in n.input:
            if x:
                consumers.setdefault(x, []).append(i)
    outputs = {o.name for o in graph.output}
    found = []
    for i, node in enumerate(graph.node):
        if node.op_type not in ANCHORS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        weights = inits.get(node.input[1])
        if weights is None or weights.data_type != onnx.TensorProto.FLOAT:
            continue
        if any(x not in inits for x in node.input[2:] if x):  # a bias computed at run time
            continue
        ann = annotations.get(names[i])
        if mode == "auto":
            if ann is None and not zeros.zero_producing(node.input[0], ir_nodes, small):
                continue
            if _size(weights) < zeros.MIN_SPARSE_WEIGHTS:
                continue
        chain = _chain(graph, i, consumers, inits, outputs)
        density = float(ann["density"]) if ann is not None else None
        found.append(Candidate(names[i], tuple(chain), node.input[0], graph.node[chain[-1]].output[0], density))
    return found


#: Quantized layers with a zero-skipping int8 kernel on the numba engine (ops/quant_sparse.py); the
#: int8 weight is input 3 of both.
INT8_ANCHORS = ("QLinearConv", "QLinearMatMul")


@dataclass(frozen=True)
class Int8Input:
    """An int8 layer's quantized activation input: the tensor, its element type, its zero point, and
    the multiply-adds per input value of the layers reading it (``weight size / (reduced channels *
    strides)``: a layer's multiply-adds are this times the input's size)."""

    name: str
    elem_type: int
    zero_point: int
    macs_per_value: float


def int8_layers(model: onnx.ModelProto) -> int:
    """How many int8 layers the numba engine runs with its zero-skipping int8 kernels (onnxruntime has
    no such kernel): QLinearConv / QLinearMatMul nodes with constant int8 weights, and QDQ Convs / MatMuls whose
    weight is a DequantizeLinear of a constant int8 tensor (``passes/fuse_qdq.py`` makes them QLinearConv /
    QLinearMatMul)."""
    return len(_int8_nodes(model)[0])


def int8_inputs(model: onnx.ModelProto) -> list[Int8Input]:
    """The quantized activations that the int8 layers skip at their zero point (each once): a QLinear
    node's ``x``, or the quantized input of the DequantizeLinear feeding a QDQ layer; only those whose
    zero point is one constant (per tensor), which is what the zero-skipping kernels take."""
    nodes, inits = _int8_nodes(model)
    producer = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    found: dict[str, Int8Input] = {}
    for n in nodes:
        dq = producer.get(n.input[0]) if n.op_type in ("Conv", "MatMul") else None
        x, zp = (dq.input[0], dq.input[2] if len(dq.input) > 2 else "") if dq is not None else (n.input[0], n.input[2])
        t = inits.get(zp)
        if t is None or _size(t) != 1 or t.data_type not in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
            continue
        macs = _macs_per_value(n, inits[n.input[3]] if n.op_type in INT8_ANCHORS else inits[producer[n.input[1]].input[0]])
        seen = found.get(x)
        found[x] = Int8Input(x, t.data_type, int(onnx.numpy_helper.to_array(t).reshape(-1)[0]),
                             macs + (seen.macs_per_value if seen else 0.0))
    return list(found.values())


def _macs_per_value(node: onnx.NodeProto, w: onnx.TensorProto) -> float:
    """Multiply-adds of ``node`` per value of its activation input: a conv's weight (M, C/group, KH,
    KW) per input channel and output position (``/ C / prod(strides)``), a MatMul's (K, N) per K."""
    dims = list(w.dims)
    if len(dims) < 2:
        return 0.0
    if node.op_type in ("Conv", "QLinearConv"):
        attrs = {a.name: a for a in node.attribute}
        strides = list(attrs["strides"].ints) if "strides" in attrs else []
        channels = dims[1] * (attrs["group"].i if "group" in attrs else 1)
        return _size(w) / max(channels, 1) / max(math.prod(strides), 1)
    return _size(w) / max(dims[-2], 1)


def _int8_nodes(model: onnx.ModelProto) -> tuple[list[onnx.NodeProto], dict[str, onnx.TensorProto]]:
    inits = constants(model.graph)
    int8 = {name for name, t in inits.items() if t.data_type == onnx.TensorProto.INT8}
    dq_int8 = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8}
    return [n for n in model.graph.node if n.domain in ("", "ai.onnx") and (
        (n.op_type in INT8_ANCHORS and len(n.input) > 3 and n.input[3] in int8)
        or (n.op_type in ("Conv", "MatMul") and len(n.input) > 1 and n.input[1] in dq_int8))], inits


def _size(t: onnx.TensorProto) -> int:
    return math.prod(t.dims)


class _Producers:
    """Tensor name -> the runtime's IR node producing it, built on lookup (``zero_producing`` reads a
    few nodes; parsing every node's attributes up front was a third of a cached session's extra
    creation time on the demo CNN)."""

    def __init__(self, graph: onnx.GraphProto, names: list[str]) -> None:
        self._graph, self._names = graph, names
        self._index = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
        self._built: dict[int, Node] = {}

    def get(self, name: str) -> Node | None:
        i = self._index.get(name)
        if i is None:
            return None
        node = self._built.get(i)
        if node is None:
            n = self._graph.node[i]
            node = self._built[i] = Node(n.op_type, tuple(n.input), tuple(n.output), attributes(n), self._names[i],
                                         n.domain)
        return node


def float_input(cand: Candidate, types: Mapping[str, onnx.TypeProto]) -> bool:
    """Whether the candidate's input is known to be float32 (the sparse kernels' type)."""
    t = types.get(cand.input)
    return t is not None and t.tensor_type.elem_type == onnx.TensorProto.FLOAT


def _chain(graph: onnx.GraphProto, anchor: int, consumers: Mapping[str, list[int]],
           inits: Mapping[str, onnx.TensorProto], outputs: set[str]) -> list[int]:
    """The anchor plus the BatchNormalization / bias Add / activation the fusion passes fold into it."""
    chain = [anchor]

    def sole(name: str) -> int | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in outputs else None

    def const_inputs(j: int) -> bool:
        return all(x in inits for x in graph.node[j].input[1:] if x)

    tail = graph.node[anchor].output[0]
    for op in ("BatchNormalization", "Add"):
        j = sole(tail)
        if j is not None and graph.node[j].op_type == op and const_inputs(j) and graph.node[j].input[0] == tail:
            chain.append(j)
            tail = graph.node[j].output[0]
    j = sole(tail)
    if j is not None and graph.node[j].op_type in _ACTS and const_inputs(j):
        return chain + [j]
    users = consumers.get(tail, [])
    ops = sorted(graph.node[u].op_type for u in users)
    if ops == ["GreaterOrEqual", "Where"] and tail not in outputs:  # FATReLU as exported
        ge, where = sorted(users, key=lambda u: graph.node[u].op_type)
        if sole(graph.node[ge].output[0]) == where and const_inputs(ge):
            return chain + sorted((ge, where))
    return chain


@dataclass(frozen=True)
class PreparedIsland:
    """An island ready to run: its fused node, sparse kernel and, where its dense path is an
    onnxruntime session, the one-island model (None for a Gemm island: see :func:`dense_path`)."""

    candidate: Candidate
    fused: Node
    kernel: Any                    # a prepared.SparseKernel
    model: onnx.ModelProto | None


#: Fused ops whose island runs dense on the sparse kernel's own weights (``SparseMatMulKernel.dense``):
#: a Gemm's layout is one untiled (K, N) matrix, which BLAS reads as it is.
OWN_DENSE = ("FusedGemm",)


def dense_path(island: PreparedIsland, session: Callable[[onnx.ModelProto], Callable[[np.ndarray], np.ndarray]]
               ) -> Callable[[np.ndarray], np.ndarray]:
    """The island's dense path: its kernel's BLAS path for a Gemm, else ``session(island.model)``."""
    if island.model is None:
        return island.kernel.dense
    return session(island.model)


#: The anchors a numpy kernel exists for.
NUMPY_ANCHORS = ("Gemm", "MatMul")


def compiled_conv_takes(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Whether a Conv candidate's anchor has the form of the conv kernel compiled ahead of time
    (:mod:`edge_runtime.engine.compiled_conv`), checked on the graph alone: the weight's rank and type
    from its initializer, the attributes. Here rather than beside the kernel: a warm session asks it
    for every Conv candidate, and importing the kernel's module took ~1 ms of it."""
    if node.op_type != "Conv":
        return False
    w = next((t for t in model.graph.initializer if t.name == node.input[1]), None)
    if w is None or len(w.dims) != 4 or w.data_type != onnx.TensorProto.FLOAT:
        return False
    attrs = attributes(node)
    return int(attrs.get("group", 1)) == 1 and attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")


def supported(model: onnx.ModelProto, cands: Sequence[Candidate], kernels: str) -> list[Candidate]:
    """The candidates ``kernels`` can build an island for: every one with numba's kernels, the Gemm /
    MatMul ones with numpy's (:mod:`edge_runtime.engine.gather`), and with the kernels compiled ahead
    of time ("compiled") also the Convs :func:`compiled_conv_takes`."""
    if kernels == "numba":
        return list(cands)
    return [c for c in cands if model.graph.node[c.nodes[0]].op_type in NUMPY_ANCHORS
            or kernels == "compiled" and compiled_conv_takes(model, model.graph.node[c.nodes[0]])]


def prepare(model: onnx.ModelProto, cand: Candidate, types: Mapping[str, onnx.TypeProto],
            threads: int, kernels: str = "numba",
            decoded: Mapping[str, np.ndarray] | None = None) -> PreparedIsland | None:
    """Fuse the candidate's nodes with the runtime's passes and build its sparse kernel (with
    ``kernels="numpy"``: :func:`edge_runtime.engine.gather.kernel` on the nodes as they are).

    Tries the whole chain first, then shorter ones; returns None when no prefix becomes one
    fused node with a sparse kernel (e.g. a grouped Conv or a 3-D weight). ``kernels="compiled"``:
    the numba-free kernels calling the kernels compiled ahead of time (:mod:`edge_runtime.engine.aot`,
    which the caller found loadable): :mod:`~edge_runtime.engine.gather`'s for a Gemm / MatMul,
    :mod:`~edge_runtime.engine.compiled_conv`'s for a Conv. ``decoded``: constants
    already decoded, used instead of the proto's tensors (which :func:`shed_weights` emptied).
    """
    decoded = decoded or {}
    if kernels == "compiled" and model.graph.node[cand.nodes[0]].op_type == "Conv":
        return _prepare_compiled_conv(model, cand, types, decoded)
    if kernels != "numba":
        return _prepare_numpy(model, cand, kernels)
    from edge_runtime import planner, prepared  # numba: imported only when an island is built
    from edge_runtime.engine.partition import constants_read, submodel
    from edge_runtime.onnx_io import decode_initializer, graph_from_model

    for nodes in _prefixes(model, cand):
        out = model.graph.node[nodes[-1]].output[0]
        try:  # the nodes without their weights, which are decoded straight from the model's tensors
            light = submodel(model, nodes, [cand.input], [out], types, cand.name, weights=False)
        except KeyError:
            return None
        weights = {name: decoded[name] if name in decoded else decode_initializer(t)
                   for name, t in constants_read(model, nodes, [cand.input]).items()}
        graph = graph_from_model(light)
        graph = planner.optimize(dataclasses.replace(graph, initializers={**graph.initializers, **weights}))
        if len(graph.nodes) != 1:
            continue
        fused = graph.nodes[0]
        layer = prepared.prepare(fused, graph.initializers, planner.PlanContext(threads=threads))
        kernel = layer.sparse_kernel() if layer is not None else None
        if kernel is not None:
            trimmed = Candidate(cand.name, nodes, cand.input, out, cand.annotated_density)
            own = fused.op_type in OWN_DENSE and kernel.weight_view() is not None
            del graph, weights  # the kernel holds its own layout
            sub = None if own else submodel(model, nodes, [cand.input], [out], types, cand.name)
            if sub is not None:  # its onnxruntime dense path reads the weights from its own proto
                restore_weights(sub, decoded)
            return PreparedIsland(trimmed, fused, kernel, sub)
    log.debug("island %s: no fused sparse kernel for its nodes", cand.name)
    return None


def shed_weights(model: onnx.ModelProto, names: Collection[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` in which the initializers in ``names`` that nothing else reads
    (one reader, not a graph output, stored in the proto) keep their name, type and shape but no
    data, and their names; ``model`` itself loses their data too. For a proto the session owns: the
    original and its memory can then go (protobuf frees a message's memory with the message, not
    a cleared field's). The partition still sees them as constants; no segment reads them.

    A model with subgraphs is returned as it is (an If / Loop body may read any outer name).
    """
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return model, []
    readers: dict[str, int] = {}
    for n in graph.node:
        for x in n.input:
            readers[x] = readers.get(x, 0) + 1
    outputs = {o.name for o in graph.output}
    drop = [i for i, t in enumerate(graph.initializer) if t.name in names and readers.get(t.name) == 1
            and t.name not in outputs and t.data_location != onnx.TensorProto.EXTERNAL]
    if not drop:
        return model, []
    shed = [graph.initializer[i].name for i in drop]
    for i in drop:
        for data in ("raw_data", "float_data"):
            graph.initializer[i].ClearField(data)
    light = onnx.ModelProto()
    light.CopyFrom(model)
    return light, shed


def restore_weights(model: onnx.ModelProto, weights: Mapping[str, np.ndarray]) -> None:
    """Put the data :func:`shed_weights` removed back into ``model``'s initializers, as decoded."""
    for t in model.graph.initializer:
        if t.name in weights:
            t.CopyFrom(onnx.numpy_helper.from_array(weights[t.name], t.name))


def _prefixes(model: onnx.ModelProto, cand: Candidate) -> Iterator[tuple[int, ...]]:
    """The candidate's chain, then ever shorter prefixes of it (never half a FATReLU)."""
    for end in range(len(cand.nodes), 0, -1):
        if end > 1 and model.graph.node[cand.nodes[end - 1]].op_type == "GreaterOrEqual":
            continue
        yield cand.nodes[:end]


def _prepare_numpy(model: onnx.ModelProto, cand: Candidate, kernels: str) -> PreparedIsland | None:
    from edge_runtime.engine import aot, gather

    if model.graph.node[cand.nodes[0]].op_type not in NUMPY_ANCHORS:
        return None
    compiled = aot.load() if kernels == "compiled" else None
    decoded: dict[str, np.ndarray] = {}  # the anchor's weight decoded once for every prefix tried
    for nodes in _prefixes(model, cand):
        kernel = gather.kernel(model, nodes, decoded, compiled)
        if kernel is not None:
            trimmed = Candidate(cand.name, nodes, cand.input, model.graph.node[nodes[-1]].output[0],
                                cand.annotated_density)
            return PreparedIsland(trimmed, gather.island_node(model, nodes, cand.name), kernel, None)
    log.debug("island %s: no numpy kernel for its nodes", cand.name)
    return None


def _prepare_compiled_conv(model: onnx.ModelProto, cand: Candidate, types: Mapping[str, onnx.TypeProto],
                           decoded: Mapping[str, np.ndarray]) -> PreparedIsland | None:
    """A Conv island on the compiled conv kernel (:mod:`edge_runtime.engine.compiled_conv`); its dense
    path is the one-island onnxruntime session, as for the JIT's Conv islands."""
    from edge_runtime.engine import aot, compiled_conv, gather
    from edge_runtime.engine.partition import submodel

    module = aot.load()
    if module is None:
        return None
    mine: dict[str, np.ndarray] = dict(decoded)
    for nodes in _prefixes(model, cand):
        kernel = compiled_conv.kernel(model, nodes, module, mine)
        if kernel is None:
            continue
        out = model.graph.node[nodes[-1]].output[0]
        try:
            sub = submodel(model, nodes, [cand.input], [out], types, cand.name)
        except KeyError:
            return None
        restore_weights(sub, decoded)
        trimmed = Candidate(cand.name, nodes, cand.input, out, cand.annotated_density)
        return PreparedIsland(trimmed, gather.island_node(model, nodes, cand.name), kernel, sub)
    log.debug("island %s: no compiled conv kernel for its nodes", cand.name)
    return None


def groups(islands: Sequence[PreparedIsland]) -> list[tuple[int, ...]]:
    """The node index groups of ``islands``, for :func:`edge_runtime.engine.partition.partition`."""
    return [isl.candidate.nodes for isl in islands]
