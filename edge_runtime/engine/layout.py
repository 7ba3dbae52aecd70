"""Segments of layout ops alone, run as numpy reshapes instead of an onnxruntime session.

Between two islands a CNN often has nothing but a Flatten (or a Reshape / Squeeze / Unsqueeze
with constant shape and axes): a segment of its own, whose onnxruntime call cost 7-14 us on the
64-128-256 CNN (4% of its 0.30 ms cut plan; numpy's reshape: 0.2 us) and one more session's
memory. Such a segment becomes :class:`LayoutStep`, a chain of numpy views, when every node in it
is one of :data:`LAYOUT_OPS` with its shape / axes known at plan time, reading the previous
node's output; otherwise it stays an onnxruntime segment.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

#: Ops that only relabel a tensor's dimensions (their output is a view of their input).
LAYOUT_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity")


class LayoutStep:
    """A plan step applying numpy reshapes in order: ``step(x) -> x reshaped``.

    ``last_kernel`` is what the executor's statistics report for it.
    """

    last_kernel = "layout"
    last_density = None

    def __init__(self, ops: Sequence[Callable[[np.ndarray], np.ndarray]], names: Sequence[str]) -> None:
        self.ops, self.names = tuple(ops), tuple(names)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for op in self.ops:
            x = op(x)
        return x


def layout_step(model: onnx.ModelProto, nodes: Sequence[int], inputs: Sequence[str], outputs: Sequence[str],
                constants: Mapping[str, onnx.TensorProto]) -> LayoutStep | None:
    """The segment of ``nodes`` (reading ``inputs``, writing ``outputs``) as a :class:`LayoutStep`,
    or None where it is not one chain of :data:`LAYOUT_OPS` from one input to one output with its
    shapes and axes among ``constants``."""
    if len(inputs) != 1 or len(outputs) != 1 or not nodes:
        return None
    ops, current = [], inputs[0]
    for i in nodes:
        node = model.graph.node[i]
        if node.domain not in ("", "ai.onnx") or node.op_type not in LAYOUT_OPS or not node.input \
                or node.input[0] != current or len(node.output) != 1:
            return None
        op = _op(node, constants, _opset(model))
        if op is None:
            return None
        ops.append(op)
        current = node.output[0]
    if current != outputs[0]:
        return None
    return LayoutStep(ops, [model.graph.node[i].name or model.graph.node[i].op_type for i in nodes])


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _ints(node: onnx.NodeProto, index: int, constants: Mapping[str, onnx.TensorProto]) -> list[int] | None:
    """Input ``index`` of ``node`` as ints when it is a constant 1-D (or scalar) integer tensor."""
    if len(node.input) <= index or not node.input[index] or node.input[index] not in constants:
        return None
    value = numpy_helper.to_array(constants[node.input[index]])
    if value.dtype.kind not in "iu" or value.ndim > 1:
        return None
    return [int(v) for v in value.reshape(-1)]


def _op(node: onnx.NodeProto, constants: Mapping[str, onnx.TensorProto],
        opset: int) -> Callable[[np.ndarray], np.ndarray] | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    kind = node.op_type
    if kind == "Identity":
        return lambda x: x
    if kind == "Flatten":
        axis = int(attrs.get("axis", 1))

        def flatten(x: np.ndarray) -> np.ndarray:
            a = axis + x.ndim if axis < 0 else axis
            return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))
        return flatten
    if kind == "Reshape":
        shape = _ints(node, 1, constants)
        if shape is None:
            return None
        allowzero = bool(attrs.get("allowzero", 0))

        def reshape(x: np.ndarray) -> np.ndarray:
            return x.reshape([x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)])
        return reshape
    axes = _ints(node, 1, constants) if opset >= 13 else [int(a) for a in attrs.get("axes", [])]
    if axes is None and not (kind == "Squeeze" and len(node.input) < 2):
        return None
    if kind == "Squeeze":
        if not axes:  # every dimension of size 1
            return lambda x: x.reshape([d for d in x.shape if d != 1])
        return lambda x: np.squeeze(x, axis=tuple(axes))
    if not axes:
        return None

    def unsqueeze(x: np.ndarray) -> np.ndarray:
        rank = x.ndim + len(axes)
        return np.expand_dims(x, tuple(sorted(a + rank if a < 0 else a for a in axes)))
    return unsqueeze
