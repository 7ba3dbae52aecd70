"""Gemm / MatMul islands on numpy alone: gather the weight rows of the nonzero inputs, then BLAS.

``SessionOptions.sparse_kernels = "numpy"`` (or a device profile's ``runtime.sparse_kernels``)
builds these instead of edge_runtime's numba kernels, so a session never loads numba: numba's
import, LLVM and a cached kernel are 55-130 MB of a process and 0.3-0.6 s of its creation
(docs/benchmarks.md, "Islands without numba"), which on a 1 GB board can matter more than speed.
Only Gemm / MatMul layers have such a kernel (a zero-skipping conv needs compiled loops); Conv
candidates then stay in onnxruntime's segments.

For ``y = act(x @ W + b)`` with x (M, K) and W (K, N): the columns of x with a nonzero entry
(``idx``) select the rows ``W[idx]``, gathered :data:`CHUNK_BYTES` at a time into a per-thread
buffer that BLAS multiplies from the cache. It reads the weights of the active inputs only, as the
numba kernel does, plus the copy: on a 4096x4096 GEMV at density 0.1 (AMD EPYC, 1 thread) 0.31 ms
with warm caches and 0.49-0.7 ms cold, against the numba kernel's 0.15 / 0.33 ms and onnxruntime's
dense 3.0 ms.

The island's dense path is numpy BLAS over the same (K, N) array, so its weights are held once.

Where ``edge-runtime warmup`` compiled the zero-skipping kernels ahead of time for this CPU
(:mod:`edge_runtime.engine.aot`), the sparse path calls them instead of the gather: the numba
kernel's machine code and speed on the same (K, N) array, still without loading numba.
"""
from __future__ import annotations

import threading
from types import ModuleType
from typing import Callable

import numpy as np
import onnx

from edge_runtime.engine import aot
from edge_runtime.engine.partition import constants
from edge_runtime.graph import Node
from edge_runtime.prepared import Array, SparseKernel
from edge_runtime.resources import aligned_empty

#: The weight rows gathered per BLAS call: about this many bytes (L2-sized, so each row is read from
#: memory once and multiplied from the cache), at least / at most this many rows. One buffer per
#: thread, not a copy of every active row: on the 4096x4096 GEMV at density 0.1 with the caches
#: flushed (AMD EPYC, 1 thread) 64-row chunks took 0.49 ms, gathering all 410 rows at once 0.55-0.60.
CHUNK_BYTES = 1 << 20
MIN_CHUNK, MAX_CHUNK = 16, 1024
#: The activations the epilogue applies, as ONNX defines them (ThresholdedRelu: x > alpha).
ACTS = ("Relu", "Clip", "LeakyRelu", "ThresholdedRelu")


def density(x: Array) -> float:
    """Nonzeros / size (NaN counts as nonzero); 1.0 for an empty array."""
    return np.count_nonzero(x) / x.size if x.size else 1.0


def density_at_most(x: Array, limit: float) -> tuple[bool, float]:
    """``(density(x) <= limit, density(x))``: numpy counts the whole input (~0.1 ns per value)."""
    d = density(x)
    return d <= limit, d


class GatherKernel(SparseKernel):
    """``y = act(x @ W + b)`` for x (..., K): the weight rows of nonzero inputs only (module doc)."""

    def __init__(self, w: Array, bias: Array | None, act: Callable[[Array], Array] | None, trans_b: bool = False,
                 alpha: float = 1.0, weight_name: str = "", compiled: ModuleType | None = None) -> None:
        """``w`` as the node stores it: (K, N), or (N, K) with ``trans_b`` (a Gemm's ``transB``);
        the kernel's (K, N) float32 layout (scaled by ``alpha``) is made by :meth:`lay_out` or on
        first use, so a caller can let go of the model's proto first and the proto, the decoded
        weight and its (K, N) copy are never held at once. ``weight_name``: the initializer.
        ``compiled``: the kernels compiled ahead of time (:func:`edge_runtime.engine.aot.load`); the
        layout is then 64-byte aligned and padded with zero columns to a multiple of their vector
        step (:data:`~edge_runtime.engine.aot.N_MULTIPLE`), which BLAS and the gather skip."""
        self._src: Array | None = w
        self._w: Array | None = None
        self._trans_b, self._alpha = trans_b, np.float32(alpha)
        self._lock = threading.Lock()
        self.weight_name = weight_name
        self.k, self.n = w.shape[::-1] if trans_b else w.shape
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        self._act = act
        self.chunk = int(min(MAX_CHUNK, max(MIN_CHUNK, CHUNK_BYTES // (4 * self.n))))
        self._local = threading.local()  # each thread's gather buffer: two threads may run one session
        self.compiled = compiled
        self._width = -(-self.n // aot.N_MULTIPLE) * aot.N_MULTIPLE if compiled is not None else self.n
        self._kernel_bias = self.bias if self.bias is not None else np.zeros(0, np.float32)

    def family(self, x: Array) -> str:
        return "gemv" if x.size == x.shape[-1] else "gemm"

    def counters(self) -> tuple[Callable[[Array], float], Callable[[Array, float], tuple[bool, float]]]:
        if self.compiled is not None:
            return aot.counters(self.compiled)
        return density, density_at_most

    def __call__(self, x: Array, dens: float) -> Array:
        rows = x.reshape(-1, self.k)
        if self.compiled is not None:
            return self._run_compiled(rows).reshape(*x.shape[:-1], self.n)
        if rows.shape[0] == 1:
            idx = np.flatnonzero(rows[0])
        else:  # the columns any row needs; at batch 1 on a line this branch is rare
            idx = np.flatnonzero(np.any(rows, axis=0))
        vals = rows[:, idx]
        w = self.w
        y = np.zeros((rows.shape[0], self.n), np.float32)
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.empty((self.chunk, self.n), np.float32)
        for s in range(0, len(idx), self.chunk):
            j = idx[s:s + self.chunk]
            rows_w = np.take(w, j, axis=0, out=buf[:len(j)], mode="clip")  # "clip": not buffered again
            y += vals[:, s:s + len(j)] @ rows_w
        return self._epilogue(y).reshape(*x.shape[:-1], self.n)

    def _run_compiled(self, rows: Array) -> Array:
        """The compiled zero-skipping kernel on the (K, N) weights (bias inside, activation after)."""
        rows = np.ascontiguousarray(rows, np.float32)
        _ = self.w  # laid out
        w = self._w.reshape(1, self.k, self._width)  # padded: the kernels write the first N columns of y
        if rows.shape[0] == 1:
            y = np.empty((1, self.n), np.float32)
            self.compiled.gemv(rows[0], w, self._kernel_bias, 0, 0.0, 0.0, y[0])
        else:
            y = np.empty((rows.shape[0], self.n), np.float32)
            self.compiled.gemm(rows, w, self._kernel_bias, 0, 0.0, 0.0, y)
        return self._act(y) if self._act is not None else y

    @property
    def w(self) -> Array:
        """The (K, N) float32 weights, laid out on first use (:meth:`lay_out`); a view of the padded
        layout when the compiled kernels need one."""
        w = self._w
        if w is None:
            with self._lock:  # two threads may make the first call
                if self._w is None:
                    self._w, self._src = self._laid_out(self._src), None
                w = self._w
        return w if self._width == self.n else w[:, :self.n]

    def _laid_out(self, src: Array) -> Array:
        """(K, N) float32 (scaled by ``alpha``); for the compiled kernels 64-byte aligned (their
        vector loads of rows that straddle cache lines ran 13% slower on the 4096x4096 GEMV) and
        (K, width) with zero columns. ``src`` itself where it already is that (held once)."""
        if self.compiled is None:
            w = _transposed(src) if self._trans_b else np.ascontiguousarray(src, dtype=np.float32)
        else:
            w = src if (not self._trans_b and self._width == self.n and self._alpha == 1.0 and src.dtype == np.float32
                        and src.flags.c_contiguous and src.ctypes.data % 64 == 0) else None
            if w is None:
                w = aligned_empty((self.k, self._width))
                w[:, self.n:] = 0.0
                if self._trans_b:
                    _transposed(src, out=w[:, :self.n])
                else:
                    w[:, :self.n] = src
        if self._alpha != 1.0:
            w = w * self._alpha if w is src else np.multiply(w, self._alpha, out=w)
        return w

    @property
    def exact_after_use(self) -> bool:
        """Whether :meth:`source_weight` stays bit-exact after calls (no ``alpha`` folded in)."""
        return self._alpha == 1.0

    def lay_out(self) -> None:
        """Make the (K, N) layout now, where that keeps :meth:`source_weight` exact (no ``alpha``)."""
        if self.exact_after_use:
            _ = self.w

    def source_weight(self) -> Array:
        """The weight as the node stores it, bit for bit (before a first use that scaled it)."""
        if self._src is not None:
            return self._src
        if self._alpha != 1.0:
            raise RuntimeError(f"{self.weight_name}: the weight was scaled by alpha at its first use")
        w = self.w
        return w.T if self._trans_b else w

    def dense(self, x: Array) -> Array:
        """The layer dense: numpy BLAS over the same weights."""
        y = x.reshape(-1, self.k) @ self.w
        return self._epilogue(y).reshape(*x.shape[:-1], self.n)

    def weight_view(self) -> Array:
        """The (K, N) weights (held once: the island's dense path reads them too)."""
        return self.w

    def _epilogue(self, y: Array) -> Array:
        if y.dtype != np.float32:
            y = y.astype(np.float32)
        if self.bias is not None:
            y += self.bias
        return self._act(y) if self._act is not None else y


#: Rows of the (N, K) weight transposed per copy by :func:`_transposed`.
TRANSPOSE_BAND = 16


def _transposed(w_nk: Array, out: Array | None = None) -> Array:
    """``w_nk.T`` as a new C-contiguous float32 array (or into ``out``), copied in bands of
    :data:`TRANSPOSE_BAND` rows: numpy's one-pass strided copy of a 4096x4096 weight took 128 ms (a
    session's creation cost), bands of 16 rows 37-45 ms (AMD EPYC)."""
    n, k = w_nk.shape
    out = np.empty((k, n), np.float32) if out is None else out
    for i in range(0, n, TRANSPOSE_BAND):
        out[:, i:i + TRANSPOSE_BAND] = w_nk[i:i + TRANSPOSE_BAND].T
    return out


def kernel(model: onnx.ModelProto, nodes: tuple[int, ...],
           decoded: dict[str, np.ndarray] | None = None, compiled: ModuleType | None = None) -> GatherKernel | None:
    """The numpy kernel of an island's nodes (a Gemm / MatMul with a constant 2-D float32 weight,
    then optionally a constant bias Add and one of :data:`ACTS`), or None when they are not that
    (a BatchNormalization, a transposed input, a bias that would broadcast the output to another
    shape, an exported FATReLU that was not rewritten: the caller tries a shorter chain). The
    kernel holds the weight as decoded and lays it out later (:meth:`GatherKernel.lay_out`).
    ``decoded``: constants already decoded, filled in here (a caller trying shorter chains of the same
    anchor decodes its weight once). ``compiled``: as :class:`GatherKernel`'s."""
    graph = model.graph
    const = constant_reader(model, decoded)
    anchor = graph.node[nodes[0]]
    w = const(anchor.input[1])
    if w is None or w.dtype != np.float32 or w.ndim != 2:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in anchor.attribute}
    gemm = anchor.op_type == "Gemm"
    if gemm and attrs.get("transA", 0):
        return None
    trans_b = gemm and bool(attrs.get("transB", 0))
    alpha = float(attrs.get("alpha", 1.0)) if gemm else 1.0
    n_out = w.shape[0] if trans_b else w.shape[1]
    bias_ndim = 2 if gemm else 1  # see _bias
    bias = None
    if gemm and len(anchor.input) > 2 and anchor.input[2]:
        bias = _bias(const(anchor.input[2]), n_out, bias_ndim)
        if bias is None:
            return None
        bias = bias * np.float32(attrs.get("beta", 1.0))
    act = None
    for i in nodes[1:]:
        node = graph.node[i]
        if node.op_type == "Add" and act is None:
            add = _bias(const(node.input[1]), n_out, bias_ndim)
            if add is None:
                return None
            bias = add if bias is None else bias + add
        elif node.op_type in ACTS and act is None:
            act = _activation(node, const)
            if act is None:
                return None
        else:
            return None
    return GatherKernel(w, bias, act, trans_b, alpha, anchor.input[1], compiled)


def constant_reader(model: onnx.ModelProto, decoded: dict[str, np.ndarray] | None) -> Callable[[str], np.ndarray | None]:
    """``const(name)``: the model's constant ``name`` decoded (once: kept in ``decoded``), or None."""
    inits = constants(model.graph)
    decoded = {} if decoded is None else decoded

    def const(name: str) -> np.ndarray | None:
        if name not in decoded:
            t = inits.get(name)
            if t is None:
                return None
            decoded[name] = onnx.numpy_helper.to_array(t)
        return decoded[name]
    return const


def _bias(b: np.ndarray | None, n: int, max_ndim: int) -> np.ndarray | None:
    """A constant added to (..., N) that only broadcasts along N, as a (N,) float32 array, else None.
    ``max_ndim`` keeps the output's rank: a Gemm's output is 2-D, a MatMul's rank is not known
    here (its input may be 1-D), so a MatMul's bias is at most 1-D."""
    if b is None or b.dtype != np.float32 or b.ndim > max_ndim or any(s != 1 for s in b.shape[:-1]) \
            or (b.ndim and b.shape[-1] not in (1, n)):
        return None
    return np.broadcast_to(b.reshape(-1), (n,)).astype(np.float32)


def _activation(node: onnx.NodeProto, const: Callable[[str], np.ndarray | None]) -> Callable[[Array], Array] | None:
    """The node's activation as a numpy function (in place where numpy can), with the ONNX op's semantics."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op == "Relu":
        return lambda y: np.maximum(y, 0.0, out=y)
    if op == "LeakyRelu":
        alpha = np.float32(attrs.get("alpha", 0.01))
        return lambda y: np.where(y >= 0.0, y, y * alpha).astype(np.float32, copy=False)
    if op == "ThresholdedRelu":
        alpha = np.float32(attrs.get("alpha", 1.0))
        return lambda y: np.where(y > alpha, y, np.float32(0.0))
    if op == "Clip":
        bounds = []
        for j, key in ((1, "min"), (2, "max")):
            if len(node.input) > j and node.input[j]:
                v = const(node.input[j])
                if v is None or v.size != 1:
                    return None
                bounds.append(np.float32(v.reshape(-1)[0]))
            else:
                bounds.append(np.float32(attrs[key]) if key in attrs else None)
        lo, hi = bounds
        return lambda y: np.clip(y, lo, hi, out=y) if lo is not None or hi is not None else y
    return None


def island_node(model: onnx.ModelProto, nodes: tuple[int, ...], name: str) -> Node:
    """A plan node standing for the island (its anchor's op type, input and the chain's output)."""
    graph = model.graph
    return Node(graph.node[nodes[0]].op_type, (graph.node[nodes[0]].input[0],), (graph.node[nodes[-1]].output[0],),
                {}, name)
