"""Rewrite Conv / Gemm / MatMul(+bias) into internal fused ops, then fold a following activation.

The fused ops (domain ``ai.edge_runtime``) carry the original attributes plus
``activation`` (a code from :mod:`edge_runtime.kernels.activation`), ``act_p0`` and
``act_p1``. Folded activations: Relu, LeakyRelu, Clip, ThresholdedRelu, HardSwish, HardSigmoid, Sigmoid, the
FATReLU ``Where(GreaterOrEqual(y, t), y, 0)``, FusedGelu, and SiLU / HardSwish as both torch exporters
emit them, ``Mul(y, Sigmoid(y))`` and ``Mul(y, HardSigmoid(y))`` (either operand order). They are the layers the sparse dispatcher can take over, because their
weights are constants that can be re-laid out once.
"""
from __future__ import annotations

import math

import numpy as np

from edge_runtime.graph import Graph, Node
from edge_runtime import act_codes as act
from edge_runtime.ops.registry import INTERNAL_DOMAIN

_FUSED = {"Conv": "FusedConv", "Gemm": "FusedGemm", "MatMul": "FusedMatMul"}


def _const_weights(node: Node, consts: dict) -> bool:
    return len(node.inputs) > 1 and node.inputs[1] in consts and (node.op_type != "MatMul"
                                                                   or consts[node.inputs[1]].ndim == 2)


def _bias_for(mm: Node, add: Node, consts: dict) -> str | None:
    """The bias input of ``add`` if it is a constant broadcast along MatMul's last axis only."""
    other = [x for x in add.inputs if x != mm.outputs[0]]
    if len(other) != 1 or other[0] not in consts or len(add.inputs) != 2:
        return None
    bias, n = consts[other[0]], consts[mm.inputs[1]].shape[1]
    if bias.dtype != np.float32 or bias.size != n or bias.shape[-1] != n:
        return None
    return other[0]


def _activation(node: Node, consts: dict) -> tuple[int, float, float] | None:
    if node.op_type == "Clip":
        if "min" in node.attrs or "max" in node.attrs:  # opset 6 attributes
            lo, hi = node.attrs.get("min"), node.attrs.get("max")
        else:
            names = list(node.inputs[1:3]) + [""] * (3 - len(node.inputs))
            if any(x and x not in consts for x in names[:2]):
                return None
            lo = float(consts[names[0]]) if names[0] else None
            hi = float(consts[names[1]]) if names[1] else None
        return act.relu_family("Clip", node.attrs, lo, hi)
    if node.op_type in ("Relu", "ThresholdedRelu", "LeakyRelu"):
        return act.relu_family(node.op_type, node.attrs)
    if node.op_type == "HardSwish":
        return act.HARDSWISH, 0.0, 0.0
    if node.op_type == "HardSigmoid":
        return act.HARDSIGMOID, float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    if node.op_type == "Sigmoid":
        return act.SIGMOID, 0.0, 0.0
    return None


def _gelu(node: Node | None) -> tuple[int, float, float] | None:
    """FusedGelu (made by passes/fuse_gelu.py, which runs first) as an epilogue code."""
    if node is None or node.op_type != "FusedGelu" or node.domain != INTERNAL_DOMAIN:
        return None
    return (act.GELU_TANH if node.attrs.get("approximate", "none") == "tanh" else act.GELU), 0.0, 0.0


def _is_hardswish_gate(node: Node) -> bool:
    """HardSigmoid(alpha=1/6, beta=1/2): x * gate(x) is HardSwish (torch's export before opset 14)."""
    return (node.op_type == "HardSigmoid" and abs(float(node.attrs.get("alpha", 0.2)) - 1 / 6) < 1e-7
            and float(node.attrs.get("beta", 0.5)) == 0.5)


def _gated(tail: str, consumers: dict, outputs: set) -> tuple[int, Node, Node] | None:
    """SiLU / HardSwish as exported: ``Mul(y, Sigmoid(y))`` (either operand order), or HardSigmoid(1/6, 1/2).

    Returns (activation code, the gate node, the Mul) when ``tail``'s only users are the two.
    """
    users = consumers.get(tail, [])
    if len(users) != 2 or tail in outputs:
        return None
    gate = next((n for n in users if n.op_type in ("Sigmoid", "HardSigmoid") and n.inputs[0] == tail), None)
    mul = next((n for n in users if n.op_type == "Mul"), None)
    if gate is None or mul is None or gate.domain not in ("", "ai.onnx") or mul.domain not in ("", "ai.onnx"):
        return None
    if gate.op_type == "HardSigmoid" and not _is_hardswish_gate(gate):
        return None
    g = gate.outputs[0]
    if sorted(mul.inputs) != sorted((tail, g)) or consumers.get(g, []) != [mul] or g in outputs:
        return None
    return (act.SILU if gate.op_type == "Sigmoid" else act.HARDSWISH), gate, mul


def _scalar(consts: dict, name: str) -> float | None:
    value = consts.get(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _threshold(tail: str, consumers: dict, consts: dict, outputs: set) -> tuple[float, Node, Node] | None:
    """FATReLU as exported: ``Where(GreaterOrEqual(y, t), y, 0)`` with scalar constants t and 0."""
    users = consumers.get(tail, [])
    if len(users) != 2 or tail in outputs:
        return None
    ge = next((n for n in users if n.op_type == "GreaterOrEqual" and n.inputs[0] == tail), None)
    where = next((n for n in users if n.op_type == "Where"), None)
    if ge is None or where is None or len(consumers.get(ge.outputs[0], [])) != 1 or ge.outputs[0] in outputs:
        return None
    t, zero = _scalar(consts, ge.inputs[1]), _scalar(consts, where.inputs[2])
    if t is None or zero != 0.0 or where.inputs[:2] != (ge.outputs[0], tail):
        return None
    return t, ge, where


def run(graph: Graph) -> tuple[Graph, bool]:
    """Apply the rewrites; nodes must be in topological order."""
    consts = graph.initializers
    outputs = {vi.name for vi in graph.outputs}
    consumers = graph.consumers()
    nodes = list(graph.nodes)
    changed = False
    by_output = {o: i for i, n in enumerate(nodes) for o in n.outputs}

    def sole_consumer(name: str) -> Node | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in outputs else None

    for i, node in enumerate(nodes):
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in _FUSED:
            continue
        if not _const_weights(node, consts):
            continue
        fused = node.replace(op_type=_FUSED[node.op_type], domain=INTERNAL_DOMAIN,
                             attrs={**node.attrs, "activation": act.NONE, "act_p0": 0.0, "act_p1": 0.0})
        tail = node.outputs[0]
        nxt = sole_consumer(tail)
        if node.op_type == "MatMul" and nxt is not None and nxt.op_type == "Add":
            bias = _bias_for(node, nxt, consts)
            if bias is not None:
                fused = fused.replace(inputs=(node.inputs[0], node.inputs[1], bias), outputs=nxt.outputs)
                nodes[by_output[nxt.outputs[0]]] = None
                tail = nxt.outputs[0]
                nxt = sole_consumer(tail)
        code = _activation(nxt, consts) if nxt is not None and nxt.domain in ("", "ai.onnx") else _gelu(nxt)
        fat = _threshold(tail, consumers, consts, outputs) if code is None else None
        if fat is not None:
            t, ge, where = fat
            nxt, code = where, (act.THRESHOLD_RELU, t, 0.0)
            nodes[by_output[ge.outputs[0]]] = None
        gated = _gated(tail, consumers, outputs) if code is None and fat is None else None
        if gated is not None:
            nxt, code = gated[2], (gated[0], 0.0, 0.0)
            nodes[by_output[gated[1].outputs[0]]] = None
        if code is not None:
            fused = fused.replace(outputs=(nxt.outputs[0],),
                                  attrs={**fused.attrs, "activation": code[0], "act_p0": code[1], "act_p1": code[2]})
            nodes[by_output[nxt.outputs[0]]] = None
        nodes[i] = fused
        changed = True
    return graph.replace(nodes=tuple(n for n in nodes if n is not None)), changed
