"""Replace ``DequantizeLinear -> element-wise float ops -> QuantizeLinear`` by one 256-entry table lookup.

A QDQ model keeps its activations in float between a DequantizeLinear and the next
QuantizeLinear: FATReLU's ``GreaterOrEqual + Where``, SiLU's ``Sigmoid + Mul``, HardSwish,
Clip, LeakyRelu, a requantization (DQ straight into Q). The input has only 256 possible
values, so the whole chain is a function of one byte: this pass evaluates the chain on all
256 values once, at plan time, with the runtime's own ops, and replaces it with
``QuantizedLookup(x, table)`` (onnxruntime does the same for QLinearSigmoid/QLinearLeakyRelu).
Each output byte is exactly what the float chain would have produced, and one gather
replaces a dequantize, the float ops and a quantize.

Fused when: the DequantizeLinear reads a uint8/int8 tensor with scalar constant scale and
zero point; every node of the chain is element-wise (:data:`ELEMENTWISE`) with scalar
constants and no input from outside the chain, except a tail of layout ops (:data:`LAYOUT`:
Reshape/Flatten/... with constant shape inputs, e.g. the Flatten before a classifier head),
which are moved after the lookup and applied to its bytes; every value of the chain is read only
inside it, except by exactly one QuantizeLinear (scalar constant scale and zero point); no
value of the chain is a graph output.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.graph import INTERNAL_DOMAIN, Graph, Node
from edge_runtime.ops import registry

_DEFAULT = ("", "ai.onnx")
ELEMENTWISE = frozenset({
    "Abs", "Add", "And", "Cast", "Celu", "Clip", "Div", "Elu", "Equal", "Erf", "Exp", "Gelu", "Greater",
    "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Less", "LessOrEqual", "Max", "Min",
    "Mish", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Relu", "Selu", "Sigmoid", "Softplus", "Softsign", "Sqrt",
    "Sub", "Tanh", "ThresholdedRelu", "Where"})
#: Ops that only move elements (one data input, constant shape/axes inputs): a lookup commutes with them.
LAYOUT = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})
_BYTES = (np.dtype(np.uint8), np.dtype(np.int8))


def _scalar(graph: Graph, name: str) -> np.ndarray | None:
    value = graph.initializers.get(name) if name else None
    return np.asarray(value) if value is not None and np.asarray(value).size == 1 else None


def _chain(dq: Node, graph: Graph, consumers: dict, outputs: set[str]) -> tuple[list[Node], Node] | None:
    """(the element-wise nodes after ``dq`` in graph order, the QuantizeLinear ending them), or None."""
    inside, values, exits, seen = [], {dq.outputs[0]}, [], set()
    frontier = [dq.outputs[0]]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "QuantizeLinear" and node.domain in _DEFAULT and node.inputs[0] in values:
                exits.append(node)
                continue
            if node.op_type in LAYOUT and node.domain in _DEFAULT and node.inputs[0] in values and all(
                    x in graph.initializers for x in node.inputs[1:] if x):
                pass  # moves bytes only: checked to form the chain's tail below
            elif node.op_type not in ELEMENTWISE or node.domain not in _DEFAULT or any(
                    x and x not in values and _scalar(graph, x) is None for x in node.inputs):
                return None  # a reader that is not element-wise, or an input from outside the chain
            inside.append(node)
            values.update(o for o in node.outputs if o)
            frontier.extend(o for o in node.outputs if o)
    if len(exits) != 1 or values & outputs:
        return None
    q = exits[0]
    if _scalar(graph, q.inputs[1]) is None or len(q.inputs) < 3 or _scalar(graph, q.inputs[2]) is None:
        return None
    members = {id(n) for n in inside} | {id(q)}
    if any(id(c) not in members for v in values for c in consumers.get(v, [])):
        return None
    tail = {id(n) for n in inside if n.op_type in LAYOUT}
    if any(c.op_type not in LAYOUT and c is not q for n in inside if id(n) in tail for c in consumers[n.outputs[0]]):
        return None  # an element-wise op after a layout op: only a tail of layout ops is moved past the lookup
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    return sorted(inside, key=lambda n: order[id(n)]), q


def _table(dq: Node, inside: list[Node], q: Node, graph: Graph, dtype: np.dtype) -> np.ndarray | None:
    """The chain evaluated on every byte: ``table[b]`` for the input whose bit pattern is ``b``."""
    values = {dq.inputs[0]: np.arange(256, dtype=np.uint8).view(dtype)}
    consts = graph.initializers
    try:
        for node in (dq, *inside, q):
            if node.op_type in LAYOUT:  # a permutation of the elements: the identity on the table
                values[node.outputs[0]] = values[node.inputs[0]]
                continue
            impl, _ = registry.resolve(node.domain, node.op_type, graph.opset(node.domain))
            args = [None if not x else values[x] if x in values else np.asarray(consts[x]) for x in node.inputs]
            result = impl.fn(*args, **node.attrs)
            for name, value in zip(node.outputs, result if isinstance(result, tuple) else (result,)):
                if name:
                    values[name] = np.asarray(value)
    except Exception:  # an op that cannot run on the table: keep the chain
        return None
    table = values[q.outputs[0]]
    return np.ascontiguousarray(table.ravel()) if table.size == 256 and table.dtype in _BYTES else None


def run(graph: Graph) -> tuple[Graph, bool]:
    """Rewrite each DequantizeLinear -> element-wise -> QuantizeLinear chain into a QuantizedLookup."""
    consumers = graph.consumers()
    outputs = {o.name for o in graph.outputs}
    consts = dict(graph.initializers)
    removed: set[int] = set()
    added: dict[int, Node] = {}
    for dq in graph.nodes:
        if dq.op_type != "DequantizeLinear" or dq.domain not in _DEFAULT or id(dq) in removed \
                or dq.inputs[0] in consts or _scalar(graph, dq.inputs[1]) is None \
                or (len(dq.inputs) > 2 and dq.inputs[2] and _scalar(graph, dq.inputs[2]) is None):
            continue
        zp = _scalar(graph, dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
        dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
        found = _chain(dq, graph, consumers, outputs) if dtype in _BYTES else None
        table = _table(dq, *found, graph, dtype) if found else None
        if table is None:
            continue
        inside, q = found
        name = f"{q.name or q.outputs[0]}/lookup_table"
        consts[name] = table
        layout = [n for n in inside if n.op_type in LAYOUT]  # in graph order: a chain ending at q
        looked = f"{q.outputs[0]}/looked_up" if layout else q.outputs[0]
        added[id(dq)] = [Node("QuantizedLookup", (dq.inputs[0], name), (looked,), {}, name=q.name or dq.name,
                              domain=INTERNAL_DOMAIN)]
        source = looked
        for k, node in enumerate(layout):  # the same moves, on the looked-up bytes
            out = q.outputs[0] if k == len(layout) - 1 else node.outputs[0]
            added[id(dq)].append(node.replace(inputs=(source, *node.inputs[1:]), outputs=(out,)))
            source = out
        removed.update(id(n) for n in (*inside, q))
    if not added:
        return graph, False
    nodes = tuple(m for n in graph.nodes if id(n) not in removed for m in added.get(id(n), [n]))
    return graph.replace(nodes=nodes, initializers=consts), True
