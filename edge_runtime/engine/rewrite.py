"""Exact rewrites of the model before onnxruntime sees it.

FATReLU (``x if x >= t else 0``, exporters/sparsity/fatrelu.py) exports as
``Where(GreaterOrEqual(x, t), x, 0)``: two nodes and a bool tensor where a ReLU model has one
node. onnxruntime runs that pair at about twice a Relu's cost (a 4-block ViT MLP at 17 tokens:
0.097 vs 0.048 ms; four 64-channel 28x28 convs: 2.02 vs 1.35 ms, 1 thread, Intel Xeon), which
made a thresholded model slower through edge_runtime than the original ReLU model through
onnxruntime. ONNX's ``ThresholdedRelu(alpha)`` is ``x if x > alpha else 0``; with ``alpha`` the
float32 just below ``t``, ``x > alpha`` is ``x >= t`` for every float32 ``x`` (NaN gives 0 in
both forms), so one ThresholdedRelu gives bit-identical outputs and runs at a Relu's speed
(1.02-1.05x a Relu's time in the same measurements).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from edge_runtime.engine.partition import constants

def _scalar(tensor: onnx.TensorProto | None) -> float | None:
    """The value of a 0-d float32 constant, else None (a (1,)-shaped one would broadcast a 0-d
    ``x`` to (1,) in the Where, which ThresholdedRelu would not)."""
    if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims):
        return None
    return float(numpy_helper.to_array(tensor))


def threshold_below(t: float) -> float:
    """The largest float32 below ``t`` (a float32): ``x > threshold_below(t)`` iff ``x >= t``."""
    return float(np.nextafter(np.float32(t), np.float32(-np.inf)))


def fatrelu_sites(model: onnx.ModelProto) -> list[tuple[int, onnx.NodeProto]]:
    """The FATReLUs :func:`fatrelu_to_thresholded_relu` replaces: ``(GreaterOrEqual index, its
    ThresholdedRelu)``, the Where's index being the only reader's. Reads the model only.

    Matches float32 ``x``, a finite 0-d constant ``t`` and a 0-d +0.0 constant (torch's export); the
    GreaterOrEqual's output must feed only that Where and not be a graph output. Subgraphs
    (If/Loop bodies) are not looked at.

    Between a DequantizeLinear and a QuantizeLinear (a QDQ int8 model) it is rewritten too:
    onnxruntime fuses that FATReLU into a ``QLinearWhere``, which branches per element and ran
    the demo's int8 CNN at 0.47 ms against 0.12-0.14 ms with ThresholdedRelu (which it runs in
    float between the DQ and Q, bit-identical bytes); edge_runtime's int8 passes tabulate either
    form into the same lookup (``passes/quantized_lookup.py``).
    """
    graph = model.graph
    if not any(op.domain in ("", "ai.onnx") and op.version >= 10 for op in model.opset_import) or \
            not any(n.op_type == "GreaterOrEqual" for n in graph.node):
        return []  # ThresholdedRelu is a default-domain op from opset 10 (GreaterOrEqual needs 12 anyway)
    consts = constants(graph)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    outputs = {o.name for o in graph.output}
    sites = []
    for i, ge in enumerate(graph.node):
        if ge.op_type != "GreaterOrEqual" or ge.domain not in ("", "ai.onnx") or len(ge.input) != 2:
            continue
        x, flag = ge.input[0], ge.output[0]
        users = readers.get(flag, [])
        if len(users) != 1 or flag in outputs:
            continue
        where = users[0]
        if where.op_type != "Where" or where.domain not in ("", "ai.onnx") or list(where.input[:2]) != [flag, x]:
            continue
        t, zero = _scalar(consts.get(ge.input[1])), _scalar(consts.get(where.input[2]))
        if t is None or not math.isfinite(t) or zero != 0.0 or math.copysign(1.0, zero) < 0:
            continue
        sites.append((i, onnx.helper.make_node("ThresholdedRelu", [x], [where.output[0]], name=where.name,
                                               alpha=threshold_below(t))))
    return sites


def fatrelu_to_thresholded_relu(model: onnx.ModelProto,
                                sites: list[tuple[int, onnx.NodeProto]] | None = None) -> int:
    """Replace every top-level ``Where(GreaterOrEqual(x, t), x, 0)`` by ``ThresholdedRelu``, in place.

    ``sites``: :func:`fatrelu_sites` of this model (or of an identical copy), when the caller
    already has them. The ThresholdedRelu takes the Where's name, output and place; the
    GreaterOrEqual goes (its scalar constants stay, unread).

    Returns:
        The number of FATReLUs rewritten.
    """
    sites = fatrelu_sites(model) if sites is None else sites
    graph = model.graph
    where_at = {o: j for j, n in enumerate(graph.node) if n.op_type == "Where" for o in n.output}
    for _, node in sites:
        graph.node[where_at[node.output[0]]].CopyFrom(node)
    for i in sorted((i for i, _ in sites), reverse=True):
        del graph.node[i]
    return len(sites)
