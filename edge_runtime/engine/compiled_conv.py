"""Conv islands on the zero-skipping conv kernel compiled ahead of time: numba is not loaded.

Where ``edge-runtime warmup`` compiled the kernels for this CPU (:mod:`edge_runtime.engine.aot`),
a Conv island (a 2-D Conv with a constant float32 weight, groups 1, explicit or VALID padding,
an optional constant bias, then optionally one of Relu, Clip, LeakyRelu, ThresholdedRelu) runs
``sparse_conv._conv_kernel``'s machine code on the JIT's own weight layout
(:func:`edge_runtime.sparse_layouts.prepare_conv_weights`), the activation fused into its epilogue
as the JIT islands do. Its dense path is the one-island onnxruntime session, as for the JIT's
Conv islands. A chain with a BatchNormalization or a bias Add after the Conv is tried shorter
(the Conv alone, or the Conv and its activation where no such node sits between them).
"""
from __future__ import annotations

import threading
from types import ModuleType
from typing import Callable

import numpy as np
import onnx

from edge_runtime import act_codes
from edge_runtime.engine import aot
from edge_runtime.engine.gather import constant_reader
from edge_runtime.engine.islands import compiled_conv_takes
from edge_runtime.onnx_io import attributes
from edge_runtime.prepared import Array, SparseKernel
from edge_runtime.resources import aligned_empty
from edge_runtime.sparse_layouts import PreparedConv, conv_output_shape, prepare_conv_weights

#: The activations fused into the kernel's epilogue (the zero-producing ones the kernel takes).
ACTS = ("Relu", "Clip", "LeakyRelu", "ThresholdedRelu")


class CompiledConvKernel(SparseKernel):
    """``y = act(conv2d(x, W) + b)`` for NCHW ``x``, skipping zero inputs (module doc)."""

    def __init__(self, w: Array, bias: Array | None, strides: tuple[int, int], pads: tuple[int, int, int, int],
                 dilations: tuple[int, int], epilogue: tuple[int, float, float], compiled: ModuleType,
                 weight_name: str = "") -> None:
        self.prepared: PreparedConv = prepare_conv_weights(w)
        cout = self.prepared.cout
        self.bias = np.zeros(0, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32).reshape(cout)
        self.strides, self.pads, self.dilations = strides, pads, dilations
        self.act, self.p0, self.p1 = epilogue
        self.compiled = compiled
        self.weight_name = weight_name
        ntiles, taps, cin, t = self.prepared.wt.shape
        self._w2 = self.prepared.wt.reshape(ntiles, taps * cin, t)
        self._family = "gemm" if (self.prepared.kh, self.prepared.kw) == (1, 1) else "conv"
        self._local = threading.local()  # each thread's scratch: two threads may run one session

    def family(self, x: Array) -> str:
        return self._family

    def counters(self) -> tuple[Callable[[Array], float], Callable[[Array, float], tuple[bool, float]]]:
        return aot.counters(self.compiled)

    def _scratch(self, pixels: int) -> tuple[Array, Array, Array, Array]:
        """This thread's lists of nonzeros (grown to ``pixels`` input pixels) and the 16-pixel block."""
        cin = self.prepared.cin
        ws = getattr(self._local, "ws", None)
        if ws is None or ws[2].shape[0] < pixels + 1:
            ntiles, _, t = self._w2.shape  # 64-byte aligned, as the JIT's workspaces: vector loads and stores
            ws = self._local.ws = (aligned_empty(pixels * cin), aligned_empty(pixels * cin, np.int32),
                                   aligned_empty(pixels + 1, np.int64), aligned_empty((16, ntiles, t)))
        return ws

    def __call__(self, x: Array, dens: float) -> Array:
        xa = np.ascontiguousarray(x, dtype=np.float32)
        n, cout, oh, ow = conv_output_shape(xa.shape, self.prepared, self.strides, self.pads, self.dilations)
        out = np.empty((n, cout, oh, ow), np.float32)
        p = self.prepared
        geom = np.array([xa.shape[2], xa.shape[3], p.kw, self.strides[0], self.strides[1], self.pads[0],
                         self.pads[1], self.dilations[0], self.dilations[1], p.kh, ow, p.cin], dtype=np.int64)
        vals, idx, ptr, scratch = self._scratch(xa.shape[2] * xa.shape[3])
        self.compiled.conv(xa, self._w2, self.bias, geom, self.act, float(self.p0), float(self.p1), out,
                           vals, idx, ptr, scratch)
        return out


def kernel(model: onnx.ModelProto, nodes: tuple[int, ...], compiled: ModuleType,
           decoded: dict[str, np.ndarray] | None = None) -> CompiledConvKernel | None:
    """The compiled kernel of an island's nodes (a Conv of the form
    :func:`~edge_runtime.engine.islands.compiled_conv_takes` accepts, then optionally one of
    :data:`ACTS`), or None when they are not that. ``decoded``: constants already decoded
    (a caller trying shorter chains decodes the weight once)."""
    graph = model.graph
    anchor = graph.node[nodes[0]]
    if not compiled_conv_takes(model, anchor) or len(nodes) > 2:
        return None
    const = constant_reader(model, decoded)
    w = const(anchor.input[1])
    bias = const(anchor.input[2]) if len(anchor.input) > 2 and anchor.input[2] else None
    if w is None or w.dtype != np.float32 or (bias is not None and (bias.dtype != np.float32 or bias.size != w.shape[0])):
        return None
    attrs = attributes(anchor)
    kh, kw = w.shape[2:]
    if list(attrs.get("kernel_shape", (kh, kw))) != [kh, kw]:
        return None
    strides = tuple(int(s) for s in attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in attrs.get("dilations", (1, 1)))
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0))) if attrs.get("auto_pad", "NOTSET") == "NOTSET" \
        else (0, 0, 0, 0)
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        return None
    epilogue: tuple[int, float, float] | None = (act_codes.NONE, 0.0, 0.0)
    if len(nodes) == 2:
        node = graph.node[nodes[1]]
        if node.op_type not in ACTS:
            return None
        epilogue = _epilogue(node, const)
        if epilogue is None:
            return None
    return CompiledConvKernel(w, bias, strides, (pads[0], pads[1], pads[2], pads[3]), dilations, epilogue, compiled,
                              anchor.input[1])


def _epilogue(node: onnx.NodeProto, const: Callable[[str], np.ndarray | None]) -> tuple[int, float, float] | None:
    attrs = attributes(node)
    lo = hi = None
    if node.op_type == "Clip":
        if "min" in attrs or "max" in attrs:  # opset 6 attributes
            lo, hi = attrs.get("min"), attrs.get("max")
        else:
            bounds = []
            for j in (1, 2):
                name = node.input[j] if len(node.input) > j else ""
                v = const(name) if name else None
                if name and (v is None or v.size != 1):
                    return None
                bounds.append(None if v is None else float(v.reshape(-1)[0]))
            lo, hi = bounds
    return act_codes.relu_family(node.op_type, attrs, lo, hi)
