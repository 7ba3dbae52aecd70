"""Fold a QuantizedLookup into the quantized conv/GEMM it reads: QLinearConvLookup / QGemmLookup.

After :mod:`edge_runtime.passes.quantized_lookup`, a QDQ CNN reads each QLinearConv through a
256-entry table (FATReLU, SiLU, ... in the quantized domain). When the lookup is the conv's
only reader, the table is applied in the conv's requantize epilogue (byte -> table[byte]):
one pass over the output instead of two, one node instead of two
(:mod:`edge_runtime.ops.quant_fused`). The result is byte for byte the unfused graph's.

Fused when: a QLinearConv (ai.onnx) or a com.microsoft QGemm with a quantized output (y_scale
given) has exactly one reader, a QuantizedLookup reading it as its data input with a constant
table, and its output is not a graph output. A conv whose output is read twice keeps its
lookup node (the other reader needs the conv's bytes).
"""
from __future__ import annotations

from edge_runtime.graph import INTERNAL_DOMAIN, Graph, Node

_DEFAULT = ("", "ai.onnx")
_MS = "com.microsoft"


def _fusible(node: Node) -> str | None:
    """The fused op's name for a conv/GEMM whose output is quantized, else None."""
    if node.op_type == "QLinearConv" and node.domain in _DEFAULT:
        return "QLinearConvLookup"
    if node.op_type == "QGemm" and node.domain == _MS and len(node.inputs) > 7 and node.inputs[7]:
        return "QGemmLookup"
    return None


def run(graph: Graph) -> tuple[Graph, bool]:
    """Rewrite each conv/GEMM -> QuantizedLookup pair (the lookup the only reader) into one fused node."""
    consumers = graph.consumers()
    outputs = {o.name for o in graph.outputs}
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    for node in graph.nodes:
        fused = _fusible(node)
        readers = consumers.get(node.outputs[0], []) if fused else []
        if len(readers) != 1 or node.outputs[0] in outputs:
            continue
        lookup = readers[0]
        if lookup.op_type != "QuantizedLookup" or lookup.domain != INTERNAL_DOMAIN \
                or lookup.inputs[0] != node.outputs[0] or lookup.inputs[1] not in graph.initializers:
            continue
        # the table is input 9 of both: after QLinearConv's optional B (8), after QGemm's C, y_scale, y_zp (6-8)
        inputs = (*node.inputs, *[""] * (9 - len(node.inputs)), lookup.inputs[1])
        replaced[id(node)] = Node(fused, inputs, lookup.outputs, dict(node.attrs), name=node.name or lookup.name,
                                  domain=INTERNAL_DOMAIN)
        removed.add(id(lookup))
    if not replaced:
        return graph, False
    nodes = tuple(replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed)
    return graph.replace(nodes=nodes), True
