"""Run float16 (and bfloat16) models in float32: exact casts at the graph's boundaries, float32 inside.

fp16 exports (``model.half()`` before ``torch.onnx.export``, or onnxconverter-common's
``convert_float_to_float16``) declare float16 inputs, outputs, weights and casts. The kernels
compute in float32, so this pass (required, first in the list):

- widens every float16 constant: Constant/ConstantOfShape values and other tensor attributes
  (initializers are widened when the model is read, onnx_io.py);
- turns ``Cast(to=FLOAT16)`` inside the graph into ``Cast(to=FLOAT)``;
- feeds each float16 graph input through ``Cast(to=FLOAT)`` (exact: float32 holds every float16),
  and produces each float16 graph output with a final ``Cast(to=FLOAT16)`` (round to nearest
  even, as onnxruntime's cast).

bfloat16 boundaries and casts are handled the same way (ml_dtypes' type). Subgraphs (If/Loop/Scan
bodies) get the same widening, and read the renamed float32 copies of float16 graph inputs.
The session still validates float16 inputs and reports ``tensor(float16)``, like onnxruntime.
Results differ from onnxruntime's (which rounds every intermediate to float16) by float16
rounding only; they are usually closer to the float32 model.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.graph import Graph, Node, ValueInfo

_FLOAT, _FLOAT16, _BFLOAT16 = 1, 10, 16
_SUFFIX = "::fp32"


def _half_types() -> dict[np.dtype, int]:
    """numpy dtype -> ONNX element type of the 16-bit floats computed in float32."""
    import ml_dtypes

    return {np.dtype(np.float16): _FLOAT16, np.dtype(ml_dtypes.bfloat16): _BFLOAT16}


def _widen_attrs(node: Node) -> Node:
    attrs: dict[str, Any] = {}
    changed = False
    for k, v in node.attrs.items():
        if isinstance(v, np.ndarray) and v.dtype in _half_types():
            v, changed = v.astype(np.float32), True
        elif isinstance(v, Graph):  # If/Loop/Scan bodies compute in float32 too
            widened = tuple(_widen_attrs(n) for n in v.nodes)
            if any(a is not b for a, b in zip(widened, v.nodes)):
                v, changed = v.replace(nodes=widened), True
        attrs[k] = v
    if node.op_type == "Cast" and int(attrs.get("to", 0)) in (_FLOAT16, _BFLOAT16):
        attrs["to"], changed = _FLOAT, True
    return node.replace(attrs=attrs) if changed else node


def run(graph: Graph) -> tuple[Graph, bool]:
    """Rewrite a graph with float16/bfloat16 boundaries or constants to compute in float32."""
    halves = _half_types()
    f16_in = {vi.name for vi in graph.inputs if vi.dtype in halves}
    f16_out = {vi.name: halves[vi.dtype] for vi in graph.outputs if vi.dtype in halves}
    nodes = [_widen_attrs(n) for n in graph.nodes]
    changed = any(a is not b for a, b in zip(nodes, graph.nodes))
    if not (f16_in or f16_out):
        return (graph.replace(nodes=tuple(nodes)), True) if changed else (graph, False)
    rename = {name: name + _SUFFIX for name in f16_in | set(f16_out)}
    nodes = [_rename(n, rename) for n in nodes]
    head = [Node("Cast", (name,), (rename[name],), {"to": _FLOAT}, name=f"{name}{_SUFFIX}_cast")
            for name in sorted(f16_in)]
    # an fp16 output that is also an fp16 input passes through both casts
    tail = [Node("Cast", (rename[name],), (name,), {"to": f16_out[name]}, name=f"{name}::fp16_cast")
            for name in sorted(f16_out)]
    return graph.replace(nodes=tuple(head + nodes + tail)), True


def _rename(node: Node, rename: dict[str, str]) -> Node:
    """``node`` reading and writing the renamed tensors, inside its subgraphs too (ONNX names are
    unique across scopes, so a subgraph never shadows an outer name)."""
    def names(xs: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(rename.get(x, x) for x in xs)

    attrs = {k: v.replace(nodes=tuple(_rename(n, rename) for n in v.nodes),
                          outputs=tuple(ValueInfo(rename.get(o.name, o.name), o.dtype, o.shape) for o in v.outputs))
             if isinstance(v, Graph) else v for k, v in node.attrs.items()}
    return node.replace(inputs=names(node.inputs), outputs=names(node.outputs),
                        implicit_inputs=names(node.implicit_inputs), attrs=attrs)
