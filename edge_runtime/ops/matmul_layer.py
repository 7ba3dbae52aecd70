"""The prepared Gemm / MatMul layer (and their fused forms): dense op, zero-skipping kernel, cost.

A Gemm / MatMul whose weights (input B) are constants is prepared once
(:func:`prepare_matmul_layer`); the planner runs its dense op, the dispatcher its sparse kernel
(2-D float32 weights, a ReLU-family epilogue, a constant bias; Gemm without transA) where the
input is sparse enough, and the cost model and ``devices calibrate`` read its family and FLOPs
from it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from edge_runtime import act_codes
from edge_runtime.graph import Graph, Node
from edge_runtime.ops import matmul as ops
from edge_runtime.prepared import Array, Epilogue, LayerWork, PreparedLayer, SparseKernel, const_input, register_prepare

_BYTES = 4  # fp32
_DENSE = {"Gemm": ops.Gemm, "MatMul": ops.MatMul, "FusedGemm": ops.FusedGemm, "FusedMatMul": ops.FusedMatMul}


@dataclass(frozen=True)
class GemmAttrs:
    """A Gemm's attributes, parsed once (a MatMul has the defaults).

    Example:
        >>> GemmAttrs.from_attrs({"transB": 1})
        GemmAttrs(alpha=1.0, beta=1.0, transA=0, transB=1)
    """

    alpha: float = 1.0
    beta: float = 1.0
    transA: int = 0
    transB: int = 0

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> GemmAttrs:
        """From a node's attributes."""
        return cls(float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0)), int(attrs.get("transA", 0)),
                   int(attrs.get("transB", 0)))


class SparseMatMulKernel(SparseKernel):
    """y = act(x @ W + b) for x (..., K), W (K, N): GEMV for one row, token-batched otherwise."""

    def __init__(self, w_kn: Array, bias: Array | None, epilogue: Epilogue, threads: int,
                 untiled: bool = False) -> None:
        from edge_runtime.kernels import sparse_matmul as sm

        self._sm = sm
        # Gemm rows are a batch (1 on a device: GEMV, fastest untiled); MatMul rows are usually
        # tokens (token-batched kernel, fastest with L2-sized column tiles). A tiled layer whose
        # first sparse call has one row is re-laid out untiled once (see __call__).
        self.prepared = sm.prepare_matmul_weights(w_kn, w_kn.shape[1] if untiled else None)
        self._layout_fixed = untiled
        self.k, self.n = w_kn.shape
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
        self.act, self.p0, self.p1, self.threads = epilogue.activation, epilogue.p0, epilogue.p1, threads

    def family(self, x: Array) -> str:
        return "gemv" if x.size == x.shape[-1] else "gemm"  # MatMulLayer.family on the array

    def __call__(self, x: Array, dens: float) -> Array:
        rows = x.reshape(-1, self.k)
        parallel = self.threads > 1 and dens * rows.shape[0] * self.k * self.n * 2 >= self._sm.PARALLEL_MIN_FLOPS
        if not self._layout_fixed:
            self._layout_fixed = True
            if rows.shape[0] == 1 and self.prepared.wt.shape[0] > 1:
                self.prepared = self._sm.prepare_matmul_weights(self.prepared.dense(), self.n)
        if rows.shape[0] == 1:
            y = self._sm.sparse_gemv(rows[0], self.prepared, self.bias, self.act, self.p0, self.p1, parallel)
        else:
            y = self._sm.sparse_matmul(rows, self.prepared, self.bias, self.act, self.p0, self.p1, parallel)
        return y.reshape(*x.shape[:-1], self.n)

    def dense(self, x: Array) -> Array:
        """The same layer dense (numpy BLAS) over this kernel's own weight layout: an island's dense
        path without a second copy of the weights (a one-layer onnxruntime session holds two)."""
        rows = x.reshape(-1, self.k)
        y = self._sm.dense_matmul(rows, self.prepared, self.bias, self.act, self.p0, self.p1)
        return y.reshape(*x.shape[:-1], self.n)

    def weight_view(self) -> Array | None:
        """The (K, N) weights as a view of the kernel's layout, or None when it is tiled (a MatMul
        layer's layout can still change on its first one-row call, and tiles are not one matrix)."""
        if not self._layout_fixed or self.prepared.wt.shape[0] != 1:
            return None
        return self.prepared.wt[0, :, : self.n]


class MatMulLayer(PreparedLayer):
    """A Gemm / MatMul / FusedGemm / FusedMatMul with constant weights B.

    Example:
        >>> import numpy as np
        >>> from edge_runtime.graph import Node
        >>> node = Node("FusedMatMul", ("x", "W"), ("y",), {}, "proj")
        >>> layer = prepare_matmul_layer(node, {"W": np.ones((384, 384), np.float32)})
        >>> layer.family((1, 197, 384)), layer.cost((1, 197, 384), (1, 197, 384)).flops
        ('gemm', 58097664.0)
    """

    def __init__(self, node: Node, w: Array, bias: Array | None, bias_known: bool, threads: int) -> None:
        super().__init__(node, w, bias, bias_known, threads)
        self.attrs = GemmAttrs.from_attrs(node.attrs)
        self._node_attrs = dict(node.attrs)
        self._b_name = node.inputs[1]
        trans_b = self.op_type.endswith("Gemm") and self.attrs.transB
        # the contracted size K: B is (K, N), or (N, K) with transB; a 1-D B is (K,)
        self.k = w.shape[1] if trans_b and w.ndim == 2 else (w.shape[-2] if w.ndim >= 2 else w.shape[0])

    def family(self, x_shape: tuple[int, ...] | None) -> str:
        """``"gemv"`` for one input row (unknown shape: one row), else ``"gemm"``."""
        return "gemv" if not x_shape or int(np.prod(x_shape)) == x_shape[-1] else "gemm"

    def cost(self, x_shape: tuple[int, ...] | None, out_shape: tuple[int, ...] | None = None) -> LayerWork:
        """FLOPs ``2 * output size * K`` (the output's size counts 0 when its shape is unknown)."""
        out = int(np.prod(out_shape)) if out_shape is not None else 0
        return LayerWork(2.0 * out * self.k, float(_BYTES * self.weight_size), out_shape)

    def _build_dense(self) -> Callable[..., Array]:
        fn = _DENSE[self.op_type]
        return functools.partial(fn, **self._node_attrs) if self._node_attrs else fn

    def _build_sparse(self) -> SparseKernel | None:
        w, bias, a = self._w, self._bias, self.attrs
        if not self.op_type.startswith("Fused") or w.ndim != 2 or w.dtype != np.float32:
            return None
        if self.epilogue.activation not in act_codes.SPARSE_CODES or not self._bias_known:
            return None
        if self.op_type == "FusedGemm":
            if a.transA:
                return None
            w = w.T if a.transB else w  # a view: prepare_matmul_weights copies once
            if a.alpha != 1.0:
                w = w * np.float32(a.alpha)
            if bias is not None:
                if bias.size not in (1, w.shape[1]) or (bias.ndim == 2 and bias.shape[0] != 1):
                    return None
                bias = np.broadcast_to(bias.reshape(-1) * np.float32(a.beta), (w.shape[1],))
        return SparseMatMulKernel(w, bias, self.epilogue, self.threads, untiled=self.op_type == "FusedGemm")

    def share_weights(self, graph: Graph, sparse: SparseKernel) -> bool:
        """Make a FusedGemm's weight initializer a view of its sparse kernel's layout, so the layer's
        weights are held once (the dense op reads the view: ``a @ b`` on a strided view is still one
        BLAS call). Only where the view equals the weight exactly (alpha 1, an untiled layout) and no
        other node or graph output reads the initializer.

        Returns:
            Whether the initializer was replaced.
        """
        view = sparse.weight_view() if isinstance(sparse, SparseMatMulKernel) else None
        name = self._b_name
        if view is None or self.op_type != "FusedGemm" or self.attrs.alpha != 1.0:
            return False
        if self.attrs.transB:
            view = view.T
        if not isinstance(graph.initializers, dict):
            return False
        w = graph.initializers.get(name)
        readers = sum(x == name for n in graph.nodes for x in n.inputs)
        if w is None or w.shape != view.shape or readers != 1 or any(o.name == name for o in graph.outputs):
            return False
        graph.initializers[name] = view
        return True


@register_prepare("Gemm", "MatMul", "FusedGemm", "FusedMatMul")
def prepare_matmul_layer(node: Node, constants: Mapping[str, Array], ctx: Any = None) -> MatMulLayer | None:
    """The prepared layer of a Gemm / MatMul (fused or not) whose weights B are constants, else None."""
    known, w = const_input(node, constants, 1)
    if not known or w is None or w.ndim == 0:
        return None
    bias_known, bias = const_input(node, constants, 2)
    return MatMulLayer(node, w, bias, bias_known, int(getattr(ctx, "threads", 1) or 1))
