"""Fuse QDQ convolutions into QLinearConv, so QDQ int8 models take the zero-skipping int8 kernels.

onnxruntime's static quantizer writes QDQ models: ``DequantizeLinear(x_q) -> Conv(W = DequantizeLinear(
w_q), B = DequantizeLinear(b_q)) -> QuantizeLinear``. Run as written, the Conv computes in float32 on
dequantized values. onnxruntime fuses the same pattern into ``QLinearConv`` (its
``QDQ ... SelectorActionTransformer``), which is what it runs and what ``golden.int8.npz`` holds;
this pass does the same, so edge_runtime computes onnxruntime's integer result (int32 sums,
one requantization) and the QLinearConv builder (:mod:`edge_runtime.ops.quant_sparse`) runs the
zero-skipping int8 kernels, skipping inputs at their zero point.

Fused when: the activation's DequantizeLinear has scalar constant scale and zero point; the
weight is a constant int8 tensor dequantized with zero point 0 (per tensor or per output
channel, axis 0); the bias is absent or a constant int32 dequantized at scale ``x_scale *
w_scale`` with zero point 0 (how the quantizer writes it); the Conv's only reader is one
QuantizeLinear with scalar constant scale and zero point, and its output is not a graph output.
Anything else keeps the float path.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.graph import Graph, Node

_DEFAULT = ("", "ai.onnx")


def _const(graph: Graph, name: str) -> np.ndarray | None:
    return np.asarray(graph.initializers[name]) if name in graph.initializers else None


def _dq_parts(graph: Graph, producers: dict, tensor: str) -> tuple[str, np.ndarray, np.ndarray, Node] | None:
    """(quantized input name, scale, zero point, the node) of ``tensor = DequantizeLinear(...)``."""
    node = producers.get(tensor)
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in _DEFAULT or len(node.inputs) < 2:
        return None
    scale = _const(graph, node.inputs[1])
    zp = _const(graph, node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if scale is None or (len(node.inputs) > 2 and node.inputs[2] and zp is None):
        return None
    q = node.inputs[0]
    zp = zp if zp is not None else np.zeros((), _const(graph, q).dtype if q in graph.initializers else np.uint8)
    return q, scale, zp, node


def _fusion(conv: Node, graph: Graph, producers: dict, consumers: dict) -> Node | None:
    """The QLinearConv replacing ``conv`` and its QuantizeLinear, or None when the pattern does not hold."""
    if conv.op_type != "Conv" or conv.domain not in _DEFAULT or len(conv.inputs) < 2:
        return None
    readers = consumers.get(conv.outputs[0], [])
    if len(readers) != 1 or conv.outputs[0] in {o.name for o in graph.outputs}:
        return None
    q_out = readers[0]
    if q_out.op_type != "QuantizeLinear" or q_out.domain not in _DEFAULT or len(q_out.inputs) < 3:
        return None
    y_scale, y_zp = _const(graph, q_out.inputs[1]), _const(graph, q_out.inputs[2])
    x, w = _dq_parts(graph, producers, conv.inputs[0]), _dq_parts(graph, producers, conv.inputs[1])
    if y_scale is None or y_zp is None or y_scale.size != 1 or y_zp.size != 1 or x is None or w is None:
        return None
    if x[1].size != 1 or x[2].size != 1 or x[2].dtype not in (np.uint8, np.int8):
        return None
    w_q = _const(graph, w[0])
    if w_q is None or w_q.dtype != np.int8 or np.any(w[2] != 0) or (w[1].size > 1 and int(w[3].attrs.get("axis", 1))
                                                                     != 0):
        return None
    inputs = [x[0], x[3].inputs[1], x[3].inputs[2] if len(x[3].inputs) > 2 else "", w[0], w[3].inputs[1],
              w[3].inputs[2] if len(w[3].inputs) > 2 else "", q_out.inputs[1], q_out.inputs[2]]
    if not inputs[2] or not inputs[5]:
        return None  # QLinearConv needs explicit zero points
    if len(conv.inputs) > 2 and conv.inputs[2]:
        b = _dq_parts(graph, producers, conv.inputs[2])
        b_q = _const(graph, b[0]) if b is not None else None
        expected = (x[1].astype(np.float32) * w[1].astype(np.float32)).ravel()
        if b_q is None or b_q.dtype != np.int32 or np.any(b[2] != 0) or not np.allclose(
                b[1].astype(np.float32).ravel(), expected, rtol=1e-6, atol=0):
            return None
        inputs.append(b[0])
    return Node("QLinearConv", tuple(inputs), q_out.outputs, dict(conv.attrs), name=conv.name)


def run(graph: Graph) -> tuple[Graph, bool]:
    """Rewrite DequantizeLinear -> Conv -> QuantizeLinear chains into QLinearConv nodes.

    The DequantizeLinear nodes stay (``dead_nodes`` drops them when nothing else reads them).
    """
    producers, consumers = graph.producers(), graph.consumers()
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    for node in graph.nodes:
        fused = _fusion(node, graph, producers, consumers)
        if fused is not None:
            replaced[id(node)] = fused
            removed.add(id(consumers[node.outputs[0]][0]))
    if not replaced:
        return graph, False
    nodes = tuple(replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed)
    return graph.replace(nodes=nodes), True
