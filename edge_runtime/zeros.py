"""Which tensors of a graph can hold exact zeros (numba-free: the island search uses it too).

A layer is a zero-skipping candidate when its input comes, through layout ops that keep zeros,
from a ReLU-family op: Relu, ThresholdedRelu, an exported FATReLU (``Where``), a Clip with a
lower bound >= 0 (ReLU6), or one of the runtime's fused layers whose epilogue is such an
activation.
"""
from __future__ import annotations

import numpy as np

from edge_runtime import act_codes
from edge_runtime.graph import Node

#: Ops through which zeros of their input reach their output unchanged in place or count.
PASS_THROUGH = frozenset({"Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze", "MaxPool",
                          "Concat", "Dropout", "Mul", "Slice", "Split", "Gather", "Pad", "GlobalMaxPool"})
#: The runtime's fused layers, whose epilogue is an ``activation`` attribute (their prepared layers,
#: ``ops/conv_layer.py`` and ``ops/matmul_layer.py``, have the zero-skipping kernels).
FUSED_SPARSE_OPS = frozenset({"FusedMatMul", "FusedGemm", "FusedConv"})
_ZERO_ACTS = {act_codes.RELU, act_codes.THRESHOLD_RELU}
#: In "auto", layers with fewer weights than this stay dense: their whole multiply takes a few
#: microseconds, less than a density check plus a kernel call (the demo CNN's 64->2 head ran 5x
#: slower sparse).
MIN_SPARSE_WEIGHTS = 8192


def zero_producing(name: str, producers: dict[str, Node], consts: dict, depth: int = 0) -> bool:
    """Whether tensor ``name`` can hold exact zeros: made by a ReLU-family op, a fused layer with
    such an activation, or a Clip with min >= 0, possibly through layout ops that keep zeros."""
    node = producers.get(name)
    if node is None or depth > 8:
        return False
    if node.op_type in ("Relu", "ThresholdedRelu", "Where"):
        return True
    if node.op_type in FUSED_SPARSE_OPS:
        a = node.attrs
        return int(a.get("activation", 0)) in _ZERO_ACTS or (
            int(a.get("activation", 0)) == act_codes.CLIP and float(a.get("act_p0", -1.0)) >= 0.0)
    if node.op_type == "Clip":
        lo = node.attrs.get("min", consts.get(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None)
        return lo is not None and float(np.asarray(lo)) >= 0.0
    if node.op_type in PASS_THROUGH:
        return any(zero_producing(x, producers, consts, depth + 1) for x in node.inputs if x and x not in consts)
    return False
