"""Per-layer dense/sparse dispatch.

``wrap(node, dense_fn, graph, ctx)`` returns the callable a step runs. For a fused
Conv/Gemm/MatMul whose weights are constants and whose input can hold exact zeros,
it returns a :class:`Dispatcher`: on every call it measures the input's density
(fraction of nonzeros, ~0.07 ns per value, stopping early once the input is known to be
above the crossover) and runs the zero-skipping kernel when
the density is at or below the crossover of the kernel family (``gemv`` for one input
row, ``gemm`` for several, ``conv``), else the dense kernel. Crossovers come from the
session's device profile, or from :data:`device_profiles.DEFAULT_CROSSOVER`.

Candidates in ``sparsity="auto"``: layers the exporter annotated, and layers whose
input comes (through layout ops) from a zero-producing op (ReLU family, thresholds).
``"force"`` takes every layer a sparse kernel supports; ``"off"`` none.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from edge_runtime.graph import Graph, Node
from edge_runtime.kernels import activation as act_codes
from edge_runtime.kernels.conv import WINOGRAD_MIN_CHANNELS
from edge_runtime.kernels.density import density, density_at_most
from edge_runtime.zeros import (  # noqa: F401 - MIN_SPARSE_WEIGHTS and zero_producing re-exported
    FUSED_SPARSE_OPS, MIN_SPARSE_WEIGHTS, zero_producing)



_EXACT = threading.local()


@contextlib.contextmanager
def exact_densities() -> Iterator[None]:
    """Within this block (this thread), dispatchers count the whole input on every call.

    Outside it a dispatcher stops counting once the input is known to be above the
    crossover (:func:`edge_runtime.kernels.density.density_at_most`), and its
    ``last_density`` is then an estimate from the part counted. The executor enters
    this block when statistics are collected, so ``run_with_stats`` reports exact
    densities.
    """
    before = getattr(_EXACT, "on", False)
    _EXACT.on = True
    try:
        yield
    finally:
        _EXACT.on = before


class Dispatcher:
    """Runs the sparse or the dense kernel of one layer per call, by measured input density.

    Attributes read by the executor's statistics: ``last_kernel`` ("sparse"/"dense")
    and ``last_density`` (exact inside :func:`exact_densities`; otherwise exact when
    the sparse kernel ran and estimated from a prefix of the input when the count
    stopped early on a dense input).
    """

    def __init__(self, name: str, dense: Callable[..., Any], sparse: "SparseKernel",
                 crossover: dict[str, float], mode: str, limits: dict[str, float] | None = None) -> None:
        self.name, self.dense, self.sparse = name, dense, sparse
        self.force = mode == "force"
        # the density at or below which the sparse kernel runs, per family (looked up per call):
        # the family crossover scaled for this layer's shape, unless measured ``limits`` are given
        self.limits = limits if limits is not None else {
            family: c * sparse.scale for family, c in crossover.items()}
        self._last = threading.local()  # per thread: two threads may run one session

    @property
    def last_kernel(self) -> str:
        """"sparse" or "dense": what this thread's last call ran."""
        return getattr(self._last, "kernel", "dense")

    @property
    def last_density(self) -> float | None:
        """The input density this thread's last call measured (see the class docstring)."""
        return getattr(self._last, "density", None)

    def __call__(self, *args: Any) -> Any:
        x = args[0]
        if self.force or getattr(_EXACT, "on", False):
            d = density(x)
            sparse = self.force or d <= self.limits[self.sparse.family(x)]
        else:
            sparse, d = density_at_most(x, self.limits[self.sparse.family(x)])
        last = self._last
        last.density = d
        if sparse:
            last.kernel = "sparse"
            return self.sparse(x, d)
        last.kernel = "dense"
        return self.dense(*args)


class SparseKernel:
    """A prepared zero-skipping kernel for one layer (subclasses per op).

    ``scale`` (<= 1) shrinks the family's crossover for layer shapes on which the kernel is
    known to be less efficient than on the shapes the crossover was measured on.
    """

    scale = 1.0

    def family(self, x: np.ndarray) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, x: np.ndarray, dens: float) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class SparseMatMulKernel(SparseKernel):
    """y = act(x @ W + b) for x (..., K), W (K, N): GEMV for one row, token-batched otherwise."""

    def __init__(self, w_kn: np.ndarray, bias: np.ndarray | None, act: int, p0: float, p1: float,
                 threads: int, untiled: bool = False) -> None:
        from edge_runtime.kernels import sparse_matmul as sm

        self._sm = sm
        # Gemm rows are a batch (1 on a device: GEMV, fastest untiled); MatMul rows are usually
        # tokens (token-batched kernel, fastest with L2-sized column tiles). A tiled layer whose
        # first sparse call has one row is re-laid out untiled once (see __call__).
        self.prepared = sm.prepare_matmul_weights(w_kn, w_kn.shape[1] if untiled else None)
        self._layout_fixed = untiled
        self.k, self.n = w_kn.shape
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
        self.act, self.p0, self.p1, self.threads = act, p0, p1, threads

    def family(self, x: np.ndarray) -> str:
        return "gemv" if x.size == x.shape[-1] else "gemm"

    def __call__(self, x: np.ndarray, dens: float) -> np.ndarray:
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

    def dense(self, x: np.ndarray) -> np.ndarray:
        """The same layer dense (numpy BLAS) over this kernel's own weight layout: an island's dense
        path without a second copy of the weights (a one-layer onnxruntime session holds two)."""
        rows = x.reshape(-1, self.k)
        y = self._sm.dense_matmul(rows, self.prepared, self.bias, self.act, self.p0, self.p1)
        return y.reshape(*x.shape[:-1], self.n)

    def weight_view(self) -> np.ndarray | None:
        """The (K, N) weights as a view of the kernel's layout, or None when it is tiled (a MatMul
        layer's layout can still change on its first one-row call, and tiles are not one matrix)."""
        if not self._layout_fixed or self.prepared.wt.shape[0] != 1:
            return None
        return self.prepared.wt[0, :, : self.n]


class SparseConvKernel(SparseKernel):
    """2-D Conv (groups=1) skipping zero input activations; NCHW in and out."""

    def __init__(self, node: Node, w: np.ndarray, bias: np.ndarray | None, threads: int) -> None:
        from edge_runtime.kernels import sparse_conv as sc
        from edge_runtime.kernels.geometry import resolve_pads

        self._sc, self._resolve = sc, resolve_pads
        self.prepared = sc.prepare_conv_weights(w)
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        a = node.attrs
        self.kernel = list(w.shape[2:])
        self.strides = list(a.get("strides") or [1, 1])
        self.dilations = list(a.get("dilations") or [1, 1])
        self.auto_pad, self.pads = a.get("auto_pad", "NOTSET"), a.get("pads")
        self.act, self.p0, self.p1 = int(a.get("activation", 0)), float(a.get("act_p0", 0.0)), float(a.get("act_p1", 0.0))
        self.threads = threads
        self.macs_per_input = w.shape[0] * w.shape[2] * w.shape[3] / (self.strides[0] * self.strides[1])
        # a 1x1 conv is a token-batched MatMul over pixels, whose dense path is one GEMM (no im2col)
        self._family = "gemm" if self.kernel == [1, 1] else "conv"
        self.scale = conv_crossover_scale(w.shape, self.strides, self.dilations)

    def family(self, x: np.ndarray) -> str:
        return self._family

    def __call__(self, x: np.ndarray, dens: float) -> np.ndarray:
        pads = self._resolve(self.auto_pad, x.shape[2:], self.kernel, self.strides, self.dilations, self.pads)
        parallel = self.threads > 1 and dens * x.size * self.macs_per_input * 2 >= 8e6
        return self._sc.sparse_conv2d(x, self.prepared, self.bias, self.strides, pads, self.dilations,
                                      self.act, self.p0, self.p1, parallel)


def conv_crossover_scale(w_shape: tuple[int, ...], strides: Sequence[int] = (1, 1),
                         dilations: Sequence[int] = (1, 1)) -> float:
    """Factor on the family crossover for a Conv weight (Cout, Cin, KH, KW).

    The conv crossover is the break-even of a 3x3 128 -> 128 conv (density ~0.45 against
    the runtime's dense conv, 0.35 with margin). Measured force/off break-evens on the
    build machine (docs/sparse_kernels.md): 64 -> 128 @14 0.45; 32 -> 64 @56 0.35;
    32 -> 32 @28 0.28; 64 @56 0.23 (its dense path is Winograd); 256 @14 0.25 (two
    128-channel output tiles walk each pixel's list twice). Narrower outputs fill fewer
    accumulator registers per pass, so sqrt(Cout/128) below 128 outputs, 128/Cout above,
    and 0.6 where the dense path is Winograd (3x3, stride 1, >= 64 channels) and Cout < 128.
    1x1 convs (family gemm, whose dense path is one GEMM) pay a per-pixel cost (bias,
    activation, the NCHW store) that only wide layers amortise. Force/off break-evens
    (``benchmarks/bench_dispatch.py --sweep-1x1``, 2026-11-28): 128 @28 0.15; 128 -> 512
    @28 0.25; 512 -> 128 @28 0.15; 256 @14 0.26; 1024 -> 256 @14 0.23; 256 -> 1024 @14
    0.28; 512 @7 0.39; 64 -> 256 @56 above 1 (its dense GEMM is slow); 256 -> 64 @56
    0.08; never (slower even at density 0.05) for 64 @56, 32 -> 128 @56, 16 -> 96 @56.
    Hence 0 (auto keeps the layer dense, without a density check) when Cout < 128 or
    Cin < 64, else (2/3) * (min(Cin, Cout)/256)^2: 0.05-0.2 with the gemm crossover
    0.30, below every measured break-even (64 -> 256 @56 is left far below its own).
    """
    cout, cin = w_shape[0], w_shape[1]
    if tuple(w_shape[2:]) == (1, 1):
        if cout < 128 or cin < 64:
            return 0.0
        return 2 / 3 * min(1.0, min(cin, cout) / 256) ** 2
    scale = min(1.0, cout / 128) ** 0.5 * min(1.0, 128 / cout)
    winograd = (tuple(w_shape[2:]) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1)
                and min(cin, cout) >= WINOGRAD_MIN_CHANNELS)
    return scale * (0.6 if winograd and cout < 128 else 1.0)


def _matmul_kernel(node: Node, consts: dict, threads: int) -> SparseKernel | None:
    a = node.attrs
    act, p0, p1 = int(a.get("activation", 0)), float(a.get("act_p0", 0.0)), float(a.get("act_p1", 0.0))
    w = consts.get(node.inputs[1])
    if w is None or w.ndim != 2 or w.dtype != np.float32 or act not in act_codes.SPARSE_CODES:
        return None
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias_name and bias_name not in consts:
        return None
    bias = consts[bias_name] if bias_name else None
    if node.op_type == "FusedGemm":
        if int(a.get("transA", 0)):
            return None
        w = w.T if int(a.get("transB", 0)) else w  # a view: prepare_matmul_weights copies once
        if float(a.get("alpha", 1.0)) != 1.0:
            w = w * np.float32(a.get("alpha", 1.0))
        if bias is not None:
            if bias.size not in (1, w.shape[1]) or (bias.ndim == 2 and bias.shape[0] != 1):
                return None
            bias = np.broadcast_to(bias.reshape(-1) * np.float32(a.get("beta", 1.0)), (w.shape[1],))
    return SparseMatMulKernel(w, bias, act, p0, p1, threads, untiled=node.op_type == "FusedGemm")


def _conv_kernel(node: Node, consts: dict, threads: int) -> SparseKernel | None:
    w = consts.get(node.inputs[1])
    if w is None or w.ndim != 4 or int(node.attrs.get("group", 1)) != 1 or w.dtype != np.float32:
        return None
    if int(node.attrs.get("activation", 0)) not in act_codes.SPARSE_CODES:  # SiLU, HardSwish, ...
        return None
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias_name and bias_name not in consts:
        return None
    return SparseConvKernel(node, w, consts[bias_name] if bias_name else None, threads)


SPARSE_BUILDERS = {"FusedMatMul": _matmul_kernel, "FusedGemm": _matmul_kernel, "FusedConv": _conv_kernel}
assert set(SPARSE_BUILDERS) == FUSED_SPARSE_OPS, "zeros.FUSED_SPARSE_OPS must name the sparse builders"


def wrap(node: Node, dense_fn: Callable[..., Any], graph: Graph, ctx: Any,
         producers: dict[str, Node]) -> Callable[..., Any]:
    """The callable to run for ``node``: a :class:`Dispatcher` where sparse kernels apply, else ``dense_fn``.

    ``producers`` is ``graph.producers()``, computed once per plan by the caller.
    """
    build = SPARSE_BUILDERS.get(node.op_type)
    if build is None or ctx.sparsity == "off" or not node.inputs:
        return dense_fn
    if ctx.sparsity == "auto" and node.name not in ctx.annotations and not zero_producing(
            node.inputs[0], producers, graph.initializers):
        return dense_fn
    weights = graph.initializers.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if ctx.sparsity == "auto" and (weights is None or weights.size < MIN_SPARSE_WEIGHTS):
        return dense_fn
    sparse = build(node, graph.initializers, ctx.threads)
    if sparse is None or (ctx.sparsity == "auto" and sparse.scale <= 0.0):
        return dense_fn  # scale 0: a shape on which the sparse kernel never won
    share_weights(node, sparse, graph)
    return Dispatcher(node.name, dense_fn, sparse, default_crossover(ctx.crossover), ctx.sparsity)


def share_weights(node: Node, sparse: SparseKernel, graph: Graph) -> bool:
    """Make a FusedGemm's weight initializer a view of its sparse kernel's layout, so the layer's
    weights are held once (the dense op reads the view: ``a @ b`` on a strided view is still one
    BLAS call). Only where the view equals the weight exactly (alpha 1, an untiled layout) and no
    other node or graph output reads the initializer.

    Returns:
        Whether the initializer was replaced.
    """
    view = sparse.weight_view() if isinstance(sparse, SparseMatMulKernel) else None
    name = node.inputs[1]
    if view is None or node.op_type != "FusedGemm" or float(node.attrs.get("alpha", 1.0)) != 1.0:
        return False
    if int(node.attrs.get("transB", 0)):
        view = view.T
    if not isinstance(graph.initializers, dict):
        return False
    w = graph.initializers.get(name)
    readers = sum(x == name for n in graph.nodes for x in n.inputs)
    if w is None or w.shape != view.shape or readers != 1 or any(o.name == name for o in graph.outputs):
        return False
    graph.initializers[name] = view
    return True


def default_crossover(overrides: dict[str, float] | Any) -> dict[str, float]:
    """Crossover densities per family: the profile's values over the shipped defaults."""
    from device_profiles import DEFAULT_CROSSOVER

    base = {"gemv": DEFAULT_CROSSOVER.gemv, "gemm": DEFAULT_CROSSOVER.gemm, "conv": DEFAULT_CROSSOVER.conv}
    base.update(dict(overrides or {}))
    return base
