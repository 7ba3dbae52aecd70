"""Per-layer dense/sparse dispatch.

``wrap(node, layer, dense_fn, graph, ctx, producers)`` returns the callable a step runs. For a
layer whose prepared layer (:mod:`edge_runtime.prepared`: a fused Conv/Gemm/MatMul with constant
weights) has a sparse kernel and whose input can hold exact zeros, it returns a
:class:`Dispatcher`: on every call it measures the input's density
(fraction of nonzeros, ~0.07 ns per value, stopping early once the input is known to be
above the crossover) and runs the zero-skipping kernel when
the density is at or below the crossover of the kernel family (``gemv`` for one input
row, ``gemm`` for several, ``conv``) times the layer's crossover scale, else the dense kernel.
Crossovers come from the session's device profile, or from :data:`device_profiles.DEFAULT_CROSSOVER`.

Candidates in ``sparsity="auto"``: layers the exporter annotated, and layers whose
input comes (through layout ops) from a zero-producing op (ReLU family, thresholds).
``"force"`` takes every layer a sparse kernel supports; ``"off"`` none.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

from edge_runtime.graph import Graph, Node
from edge_runtime.prepared import PreparedLayer, SparseKernel
from edge_runtime.zeros import MIN_SPARSE_WEIGHTS, zero_producing

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

    def __init__(self, name: str, dense: Callable[..., Any], sparse: SparseKernel, limits: dict[str, float],
                 mode: str) -> None:
        self.name, self.dense, self.sparse = name, dense, sparse
        # the kernel's density counters: numba's SIMD count for edge_runtime's kernels (imported here, so
        # that importing this module, or running a numpy island, does not load numba)
        self._density, self._at_most = sparse.counters()
        self.force = mode == "force"
        # the density at or below which the sparse kernel runs, per family (looked up per call):
        # :func:`limits` of the layer, or the crossover an island measured
        self.limits = limits
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
            d = self._density(x)
            sparse = self.force or d <= self.limits[self.sparse.family(x)]
        else:
            sparse, d = self._at_most(x, self.limits[self.sparse.family(x)])
        last = self._last
        last.density = d
        if sparse:
            last.kernel = "sparse"
            return self.sparse(x, d)
        last.kernel = "dense"
        return self.dense(*args)


def wrap(node: Node, layer: PreparedLayer | None, dense_fn: Callable[..., Any], graph: Graph, ctx: Any,
         producers: dict[str, Node]) -> Callable[..., Any]:
    """The callable to run for ``node``: a :class:`Dispatcher` where a sparse kernel applies, else ``dense_fn``.

    Args:
        node: the node.
        layer: its prepared layer (:func:`edge_runtime.prepared.prepare`), or None (no sparse kernel).
        dense_fn: the dense callable the planner resolved.
        graph: the optimised graph (a FusedGemm's weight initializer may become a view of its
            sparse kernel's layout: :meth:`PreparedLayer.share_weights`).
        ctx: the plan context (sparsity mode, crossovers, annotations).
        producers: ``graph.producers()``, computed once per plan by the caller.
    """
    if layer is None or ctx.sparsity == "off" or not node.inputs:
        return dense_fn
    if ctx.sparsity == "auto" and node.name not in ctx.annotations and not zero_producing(
            node.inputs[0], producers, graph.initializers):
        return dense_fn
    if ctx.sparsity == "auto" and (layer.weight_size < MIN_SPARSE_WEIGHTS or layer.crossover_scale <= 0.0):
        return dense_fn  # scale 0: a shape on which the sparse kernel never won
    sparse = layer.sparse_kernel()
    if sparse is None:
        return dense_fn
    layer.share_weights(graph, sparse)
    return Dispatcher(node.name, dense_fn, sparse, limits(layer, ctx.crossover), ctx.sparsity)


def limits(layer: PreparedLayer, crossover: dict[str, float] | Any) -> dict[str, float]:
    """The densities at or below which ``layer`` runs sparse, per family: the family crossovers
    (:func:`default_crossover`) times the layer's crossover scale."""
    return {family: c * layer.crossover_scale for family, c in default_crossover(crossover).items()}


def default_crossover(overrides: dict[str, float] | Any) -> dict[str, float]:
    """Crossover densities per family: the profile's values over the shipped defaults."""
    from device_profiles import DEFAULT_CROSSOVER

    base = {"gemv": DEFAULT_CROSSOVER.gemv, "gemm": DEFAULT_CROSSOVER.gemm, "conv": DEFAULT_CROSSOVER.conv}
    base.update(dict(overrides or {}))
    return base
