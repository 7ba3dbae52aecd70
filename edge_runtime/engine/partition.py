"""Cut an ONNX graph into dense segments and sparse islands (pure onnx: no onnxruntime here).

An *island* is a small group of nodes (a Conv/Gemm/MatMul with constant weights, plus the
BatchNormalization / bias Add / activation it feeds) that edge_runtime runs itself, so that
its zero-skipping kernel can be chosen per call. Everything else is grouped into maximal
*segments*, each handed to one onnxruntime session, so onnxruntime keeps its blocked layout
and fusions inside a segment (cutting costs that layout at every cut: references §2).

Stage assignment (one pass in topological order). A non-island node's level is the largest of
its producers' levels, where a producer inside an island counts as the island's level + 1; an
island's level is computed the same way from its external inputs. Segment k holds the
non-island nodes of level k and runs before the islands of level k, which run before segment
k + 1. A segment node never waits for an island of its own level, so the order is valid, and
chains (CNN backbones) get one segment between consecutive islands while branches that do not
depend on an island (residual shortcuts, shape subgraphs) join the earliest segment they can.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import onnx
from onnx import helper

SEGMENT, ISLAND = "segment", "island"


@dataclass(frozen=True)
class Stage:
    """One step of a partitioned graph: a segment (onnxruntime) or an island (edge_runtime).

    ``nodes`` index ``model.graph.node`` in execution order; ``inputs`` are the tensors the
    stage reads from outside (graph inputs or other stages' outputs; initializers excluded);
    ``outputs`` are the tensors later stages or the caller need.
    """

    kind: str
    name: str
    nodes: tuple[int, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def node_names(graph: onnx.GraphProto) -> list[str]:
    """Each node's name, or ``{op_type}_{index}`` when unnamed (as the runtime's IR names it)."""
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(graph.node)]


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads: explicit inputs plus outer-scope names its subgraphs use."""
    names = [x for x in node.input if x]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            names.extend(_outer_names(g))
    return names


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    local = {x.name for x in graph.input} | {t.name for t in graph.initializer}
    used: list[str] = []
    for node in graph.node:
        used.extend(x for x in node_inputs(node) if x not in local)
        local.update(node.output)
    return used


def partition(model: onnx.ModelProto, islands: Sequence[Sequence[int]]) -> tuple[Stage, ...]:
    """Assign every node to a segment or an island and compute each stage's inputs and outputs.

    Args:
        model: a model whose nodes are in topological order (ONNX requires it).
        islands: node index groups, each run by edge_runtime; a group's first node reads the
            island's input and its last node writes the island's output.

    Returns:
        The stages in execution order (empty segments dropped).
    """
    graph = model.graph
    island_of = {i: k for k, group in enumerate(islands) for i in group}
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    level: dict[int, int] = {}
    island_level: dict[int, int] = {}

    def after(name: str) -> int:
        p = producer.get(name)
        if p is None:
            return 0
        k = island_of.get(p)
        return level[p] if k is None else island_level[k] + 1

    for i, node in enumerate(graph.node):
        k = island_of.get(i)
        if k is None:
            level[i] = max((after(x) for x in node_inputs(node)), default=0)
        elif k not in island_level:
            group = set(islands[k])
            external = [x for j in islands[k] for x in node_inputs(graph.node[j]) if producer.get(x) not in group]
            island_level[k] = max((after(x) for x in external), default=0)
    top = max(list(level.values()) + list(island_level.values()), default=0)
    names = node_names(graph)
    groups: list[tuple[str, str, list[int]]] = []
    for lv in range(top + 1):
        seg = [i for i in range(len(graph.node)) if i not in island_of and level[i] == lv]
        if seg:
            groups.append((SEGMENT, f"segment_{lv}", seg))
        for k in sorted(k for k, v in island_level.items() if v == lv):
            groups.append((ISLAND, names[islands[k][0]], list(islands[k])))
    return _with_io(model, groups)


def _with_io(model: onnx.ModelProto, groups: list[tuple[str, str, list[int]]]) -> tuple[Stage, ...]:
    graph = model.graph
    consts = set(constants(graph)) | {t.values.name for t in graph.sparse_initializer}
    graph_outputs = [o.name for o in graph.output]
    reads = [{x for i in nodes for x in node_inputs(graph.node[i])} for _, _, nodes in groups]
    stages = []
    for s, (kind, name, nodes) in enumerate(groups):
        made = [o for i in nodes for o in graph.node[i].output if o]
        made_set = set(made)
        later = set().union(*reads[s + 1:]) if s + 1 < len(groups) else set()
        inputs = _unique(x for i in nodes for x in node_inputs(graph.node[i])
                         if x not in made_set and x not in consts)
        outputs = tuple(o for o in made if o in later or o in graph_outputs)
        stages.append(Stage(kind, name, tuple(nodes), inputs, outputs))
    return tuple(stages)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and the outputs of ``Constant`` nodes with a tensor ``value``, by name."""
    found = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                found[node.output[0]] = value
    return found


#: Initializers up to this many elements keep their values for shape inference (shape vectors,
#: axes, scalars that data propagation reads); larger ones (weights) are passed as typed inputs.
_SHAPE_DATA_MAX = 64


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Every tensor's type (element type and, where known, shape) from ONNX shape inference.

    Inference runs on a copy without the weights' data: onnx serializes the model it infers on,
    which for an 80 MB MLP took 0.25 s and another 80 MB.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model), strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort; missing types make the caller fall back
        inferred = model
    g = inferred.graph
    types = {v.name: v.type for v in list(g.value_info) + list(g.input) + list(g.output)}
    for t in model.graph.initializer:
        types.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    return types


def types_to_doc(types: Mapping[str, onnx.TypeProto], names: Iterable[str]) -> dict[str, Any]:
    """The tensor types of ``names`` as JSON: name -> [element type, dims or None], a dim an int, a
    symbol or None; names without a tensor type are left out.

    Example:
        >>> t = helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, ["N", 3, None])
        >>> types_to_doc({"x": t, "y": onnx.TypeProto()}, ["x", "y", "z"])
        {'x': [1, ['N', 3, None]]}
    """
    doc: dict[str, Any] = {}
    for name in sorted(set(names)):
        t = types.get(name)
        if t is None or not t.HasField("tensor_type") or not t.tensor_type.elem_type:
            continue
        tt = t.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                for d in tt.shape.dim] if tt.HasField("shape") else None
        doc[name] = [tt.elem_type, dims]
    return doc


def types_from_doc(doc: Any) -> dict[str, onnx.TypeProto] | None:
    """The types :func:`types_to_doc` wrote, or None when ``doc`` is missing or not of that form
    (a cache entry from another version: the caller infers them again)."""
    if not isinstance(doc, dict) or not doc:
        return None
    try:
        return {str(name): helper.make_tensor_type_proto(int(elem), None if dims is None else [
            d if d is None or isinstance(d, str) else int(d) for d in dims]) for name, (elem, dims) in doc.items()}
    except (TypeError, ValueError):
        return None


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its large initializers turned into typed graph inputs (no data copied)."""
    light = onnx.ModelProto()
    light.ir_version, light.producer_name = model.ir_version, model.producer_name
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    src, g = model.graph, light.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    declared = {i.name for i in src.input}
    for t in src.initializer:
        if _elements(t) <= _SHAPE_DATA_MAX:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def _elements(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n


def constants_read(model: onnx.ModelProto, nodes: Sequence[int], inputs: Sequence[str]) -> dict[str, onnx.TensorProto]:
    """The initializers and ``Constant`` node values that ``nodes`` read, by name (not copied)."""
    picked = [model.graph.node[i] for i in nodes]
    read = {x for n in picked for x in node_inputs(n)} - set(inputs) - {o for n in picked for o in n.output}
    return {name: t for name, t in constants(model.graph).items() if name in read}


def submodel(model: onnx.ModelProto, nodes: Sequence[int], inputs: Sequence[str], outputs: Sequence[str],
             types: Mapping[str, onnx.TypeProto], name: str, weights: bool = True) -> onnx.ModelProto:
    """A standalone model of ``nodes`` reading ``inputs`` and writing ``outputs``.

    The initializers and ``Constant`` node values the nodes read are copied in as initializers
    (each copied once: ``make_graph`` would copy them a second time), unless ``weights`` is
    False (the caller decodes them from ``model`` itself); opsets and IR version are kept.

    Raises:
        KeyError: a boundary tensor has no known type (the caller falls back to one session).
    """
    graph = model.graph
    picked = [graph.node[i] for i in nodes]
    g = helper.make_graph(picked, name, [_value_info(x, types) for x in inputs],
                          [_value_info(x, types) for x in outputs])
    if weights:
        for const_name, t in constants_read(model, nodes, inputs).items():
            copy = g.initializer.add()
            copy.CopyFrom(t)
            copy.name = const_name
    read = {x for n in picked for x in node_inputs(n)}
    g.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in read)
    sub = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            producer_name="edge_runtime.engine")
    sub.functions.extend(model.functions)
    return sub


def _value_info(name: str, types: Mapping[str, onnx.TypeProto]) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto()
    vi.name = name
    vi.type.CopyFrom(types[name])
    if not vi.type.tensor_type.elem_type:
        raise KeyError(name)
    return vi
