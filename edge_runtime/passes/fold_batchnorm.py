"""Fold an inference-mode BatchNormalization into the Conv that feeds it.

y = gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta
  = conv(x, W * s) + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)
"""
from __future__ import annotations

import numpy as np

from edge_runtime.graph import Graph, Node


def _foldable(conv: Node, bn: Node, graph: Graph, consumers: dict) -> bool:
    consts = graph.initializers
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.outputs) != 1:
        return False
    if len(consumers.get(conv.outputs[0], [])) != 1 or conv.outputs[0] in {o.name for o in graph.outputs}:
        return False
    if len(conv.inputs) < 2 or conv.inputs[1] not in consts or (len(conv.inputs) > 2 and conv.inputs[2]
                                                                  and conv.inputs[2] not in consts):
        return False
    if int(bn.attrs.get("training_mode", 0)) or any(o for o in bn.outputs[1:]):
        return False
    return all(x in consts for x in bn.inputs[1:5])


def run(graph: Graph) -> tuple[Graph, bool]:
    """Rewrite Conv -> BatchNormalization pairs into one Conv with adjusted weights."""
    producers, consumers = graph.producers(), graph.consumers()
    consts = dict(graph.initializers)
    removed: set[int] = set()
    replaced: dict[int, Node] = {}
    for bn in graph.nodes:
        if bn.op_type != "BatchNormalization" or bn.inputs[0] not in producers:
            continue
        conv = producers[bn.inputs[0]]
        if not _foldable(conv, bn, graph, consumers):
            continue
        gamma, beta, mean, var = (consts[x].astype(np.float32) for x in bn.inputs[1:5])
        scale = gamma / np.sqrt(var + np.float32(bn.attrs.get("epsilon", 1e-5)))   # (Cout,)
        w = consts[conv.inputs[1]]
        b = consts[conv.inputs[2]] if len(conv.inputs) > 2 and conv.inputs[2] else np.zeros(w.shape[0], np.float32)
        w_name, b_name = f"{conv.name}/folded_W", f"{conv.name}/folded_B"
        consts[w_name] = (w * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        consts[b_name] = ((b - mean) * scale + beta).astype(np.float32)
        replaced[id(conv)] = conv.replace(inputs=(conv.inputs[0], w_name, b_name), outputs=(bn.outputs[0],))
        removed.add(id(bn))
    if not replaced:
        return graph, False
    nodes = tuple(replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed)
    return graph.replace(nodes=nodes, initializers=consts), True
