"""Fuse QDQ convolutions into QLinearConv (QDQ Gemms into com.microsoft QGemm, QDQ MatMuls into QLinearMatMul),
so QDQ int8 models take the zero-skipping int8 kernels.

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
Anything else keeps the float path. A Gemm (``transA`` 0, ``alpha``/``beta`` 1, the same weight
and bias rules, per-channel scales along N) becomes QGemm, quantized when its only reader is a
QuantizeLinear and with a float output otherwise (a classifier's logits).

A MatMul (a Transformer's Linear on (batch, tokens, dim) inputs, exported as MatMul + Add) becomes
QLinearMatMul under onnxruntime's rule for QDQ MatMul (``MatMulNodeGroupSelector``): both inputs
dequantized, the only reader one QuantizeLinear whose type is the activation's. This pass also asks
for a constant 2-D int8 weight with zero point 0 (per tensor, or per column: axis 1), which is what
the quantizer writes and what the sparse int8 builder runs. Without a QuantizeLinear after it
onnxruntime makes a MatMulIntegerToFloat; that case keeps the float MatMul here (same products,
float rounding instead of integer sums). The bias Add after the MatMul is quantized on its own
(DQ -> Add -> Q, onnxruntime's QLinearAdd) and stays as it is.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.graph import Graph, Node

_DEFAULT = ("", "ai.onnx")
MS_DOMAIN = "com.microsoft"


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
    if scale.ndim > 1 or int(node.attrs.get("block_size", 0) or 0):
        return None  # blocked quantization (opset 21): not what QLinearConv/QGemm express
    q = node.inputs[0]
    zp = zp if zp is not None else np.zeros((), _const(graph, q).dtype if q in graph.initializers else np.uint8)
    return q, scale, zp, node


def _fusion(conv: Node, graph: Graph, producers: dict, consumers: dict) -> Node | None:
    """The QLinearConv replacing ``conv`` and its QuantizeLinear, or None when the pattern does not hold."""
    if conv.op_type != "Conv" or conv.domain not in _DEFAULT or len(conv.inputs) < 2:
        return None
    q_out = _sole_quantize(conv, graph, consumers)
    x, w = _dq_parts(graph, producers, conv.inputs[0]), _dq_parts(graph, producers, conv.inputs[1])
    if q_out is None or x is None or w is None:
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
    bias = _bias(graph, producers, conv, x[1], w[1])
    if bias is False:
        return None
    if bias:
        inputs.append(bias)
    return Node("QLinearConv", tuple(inputs), q_out.outputs, dict(conv.attrs), name=conv.name)


def _sole_quantize(node: Node, graph: Graph, consumers: dict) -> Node | None:
    """The QuantizeLinear (scalar constant scale and zero point) that is the only reader of ``node``'s output."""
    readers = consumers.get(node.outputs[0], [])
    if len(readers) != 1 or node.outputs[0] in {o.name for o in graph.outputs}:
        return None
    q = readers[0]
    if q.op_type != "QuantizeLinear" or q.domain not in _DEFAULT or len(q.inputs) < 3:
        return None
    scale, zp = _const(graph, q.inputs[1]), _const(graph, q.inputs[2])
    return q if scale is not None and zp is not None and scale.size == 1 and zp.size == 1 else None


def _gemm_fusion(gemm: Node, graph: Graph, producers: dict, consumers: dict) -> tuple[Node, Node | None] | None:
    """(com.microsoft QGemm replacing ``gemm``, the QuantizeLinear it absorbs or None), or None.

    Without a QuantizeLinear after it (a classifier's logits) the QGemm has a float output.
    """
    a = gemm.attrs
    if gemm.op_type != "Gemm" or gemm.domain not in _DEFAULT or len(gemm.inputs) < 2 or int(a.get("transA", 0)) \
            or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        return None
    x, w = _dq_parts(graph, producers, gemm.inputs[0]), _dq_parts(graph, producers, gemm.inputs[1])
    if x is None or w is None or x[1].size != 1 or x[2].size != 1 or x[2].dtype not in (np.uint8, np.int8):
        return None
    w_q, trans_b = _const(graph, w[0]), int(a.get("transB", 0))
    if w_q is None or w_q.dtype != np.int8 or w_q.ndim != 2 or np.any(w[2] != 0) or (
            w[1].size > 1 and int(w[3].attrs.get("axis", 1)) != (0 if trans_b else 1)):
        return None
    inputs = [x[0], x[3].inputs[1], x[3].inputs[2] if len(x[3].inputs) > 2 else "", w[0], w[3].inputs[1],
              w[3].inputs[2] if len(w[3].inputs) > 2 else ""]
    if not inputs[2] or not inputs[5]:
        return None
    bias = _bias(graph, producers, gemm, x[1], w[1])
    if bias is False:
        return None
    inputs.append(bias or "")
    q = _sole_quantize(gemm, graph, consumers)
    if q is not None:
        inputs += [q.inputs[1], q.inputs[2]]
    outputs = q.outputs if q is not None else gemm.outputs
    return Node("QGemm", tuple(inputs), outputs, {"transB": trans_b}, name=gemm.name, domain=MS_DOMAIN), q


def _matmul_fusion(matmul: Node, graph: Graph, producers: dict, consumers: dict) -> tuple[Node, Node] | None:
    """(QLinearMatMul replacing ``matmul``, the QuantizeLinear it absorbs), or None when the pattern does not hold."""
    if matmul.op_type != "MatMul" or matmul.domain not in _DEFAULT or len(matmul.inputs) != 2:
        return None
    q = _sole_quantize(matmul, graph, consumers)
    x, w = _dq_parts(graph, producers, matmul.inputs[0]), _dq_parts(graph, producers, matmul.inputs[1])
    if q is None or x is None or w is None or x[1].size != 1 or x[2].size != 1 or x[2].dtype not in (np.uint8,
                                                                                                      np.int8):
        return None
    if _const(graph, q.inputs[2]).dtype != x[2].dtype:
        return None  # onnxruntime asks for the output type to be the activation's
    w_q = _const(graph, w[0])
    if w_q is None or w_q.dtype != np.int8 or w_q.ndim != 2 or np.any(w[2] != 0) or (
            w[1].size > 1 and (w[1].size != w_q.shape[1] or int(w[3].attrs.get("axis", 1)) not in (1, -1))):
        return None
    inputs = (x[0], x[3].inputs[1], x[3].inputs[2] if len(x[3].inputs) > 2 else "", w[0], w[3].inputs[1],
              w[3].inputs[2] if len(w[3].inputs) > 2 else "", q.inputs[1], q.inputs[2])
    if not inputs[2] or not inputs[5]:
        return None  # QLinearMatMul needs explicit zero points
    return Node("QLinearMatMul", inputs, q.outputs, {}, name=matmul.name), q


def _bias(graph: Graph, producers: dict, node: Node, x_scale: np.ndarray, w_scale: np.ndarray) -> str | None | bool:
    """The int32 bias tensor of ``node`` (input 2) quantized at ``x_scale * w_scale``; None without a bias;
    False when the bias is there but not in that form."""
    if len(node.inputs) < 3 or not node.inputs[2]:
        return None
    b = _dq_parts(graph, producers, node.inputs[2])
    b_q = _const(graph, b[0]) if b is not None else None
    expected = (x_scale.astype(np.float32) * w_scale.astype(np.float32)).ravel()
    if b_q is None or b_q.dtype != np.int32 or np.any(b[2] != 0) or not np.allclose(
            b[1].astype(np.float32).ravel(), expected, rtol=1e-6, atol=0):
        return False
    return b[0]


def run(graph: Graph) -> tuple[Graph, bool]:
    """Rewrite DequantizeLinear -> Conv -> QuantizeLinear chains into QLinearConv nodes,
    DequantizeLinear -> Gemm (-> QuantizeLinear) into com.microsoft QGemm and
    DequantizeLinear -> MatMul -> QuantizeLinear into QLinearMatMul.

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
            continue
        gemm = _gemm_fusion(node, graph, producers, consumers)
        if gemm is not None:
            replaced[id(node)] = gemm[0]
            if gemm[1] is not None:
                removed.add(id(gemm[1]))
            continue
        matmul = _matmul_fusion(node, graph, producers, consumers)
        if matmul is not None:
            replaced[id(node)] = matmul[0]
            removed.add(id(matmul[1]))
    if not replaced:
        return graph, False
    nodes = tuple(replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed)
    return graph.replace(nodes=nodes), True
