"""One home per layer: an op's ``prepare(node, constants, ctx)`` returns a :class:`PreparedLayer`.

A prepared layer is everything the runtime knows about one Conv / Gemm / MatMul with constant
weights, worked out once from its node: its frozen attributes (parsed once, with the spec's
defaults), its dense implementation, its optional zero-skipping kernel, the kernel family and
crossover scale the dispatcher decides with, and its cost (FLOPs, weight bytes). Every reader asks
the layer instead of parsing the node again: the planner (dense kernel), the dispatcher
(:func:`edge_runtime.dispatch.wrap`), the cost model (:func:`edge_runtime.profiling.costmodel.layer_cost`),
``devices calibrate`` (:mod:`edge_runtime.profiling.calibrate`), the sparse islands of the
onnxruntime engine and the benchmarks.

Ops register their prepare next to their implementation (``ops/conv_layer.py``,
``ops/matmul_layer.py``) with :func:`register_prepare`. Adding a sparse kernel touches the kernel,
the op's prepare (its :meth:`PreparedLayer.sparse_kernel`) and a test.

Importing this module loads neither numba nor the kernels (:func:`prepare` loads the op
modules), and a layer builds its kernels only when asked: the cost model builds none.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from edge_runtime.graph import INTERNAL_DOMAIN, Graph, Node

Array = NDArray[Any]
#: The domains whose op types the prepares are registered for: ONNX's and the runtime's own.
_DOMAINS = ("", "ai.onnx", INTERNAL_DOMAIN)


@dataclass(frozen=True)
class Epilogue:
    """The activation a fused layer applies to its output (codes in :mod:`edge_runtime.act_codes`).

    Example:
        >>> Epilogue.from_attrs({"activation": 2, "act_p1": 6.0})
        Epilogue(activation=2, p0=0.0, p1=6.0)
    """

    activation: int = 0
    p0: float = 0.0
    p1: float = 0.0

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Epilogue:
        """The fused ops' ``activation``, ``act_p0`` and ``act_p1`` attributes (an unfused op: none)."""
        return cls(int(attrs.get("activation", 0)), float(attrs.get("act_p0", 0.0)),
                   float(attrs.get("act_p1", 0.0)))


@dataclass(frozen=True)
class LayerWork:
    """What one call of a layer costs: FLOPs (a multiply-add counts 2), the bytes of its weights
    (the part a sparse kernel reads only for nonzero inputs), and its output shape."""

    flops: float
    weight_bytes: float
    output_shape: tuple[int, ...] | None


class SparseKernel:
    """A prepared zero-skipping kernel for one layer: ``kernel(x, density) -> y``.

    ``family(x)`` names the crossover that decides for input ``x`` (``"gemv"``, ``"gemm"``,
    ``"conv"``); the density passed in only decides whether the kernel runs in parallel.
    """

    def family(self, x: Array) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, x: Array, dens: float) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def counters(self) -> tuple[Callable[[Array], float], Callable[[Array, float], tuple[bool, float]]]:
        """The dispatcher's ``density(x)`` and ``density_at_most(x, limit)`` for this kernel's inputs:
        numba's SIMD counts (:mod:`edge_runtime.kernels.density`), which a kernel compiled by numba
        has loaded anyway."""
        from edge_runtime.kernels.density import density, density_at_most

        return density, density_at_most


class PreparedLayer:
    """One layer with constant weights, prepared once (subclasses per op family).

    Attributes:
        name: the node's name.
        op_type: the node's op type.
        weight_shape: the constant weight's shape.
        epilogue: the fused activation (none for an unfused op).
        crossover_scale: factor (<= 1) on the family crossover for this layer's shape; 0 means
            ``sparsity="auto"`` never runs it sparse (a shape on which the kernel never won).
        threads: the threads its sparse kernel may use.

    Example:
        >>> import numpy as np
        >>> from edge_runtime.graph import Node
        >>> node = Node("FusedGemm", ("x", "W"), ("y",), {"activation": 1}, "fc")
        >>> layer = prepare(node, {"W": np.ones((64, 32), np.float32)})
        >>> layer.family((1, 64)), layer.cost((1, 64), (1, 32)).flops
        ('gemv', 4096.0)
    """

    name: str
    op_type: str
    weight_shape: tuple[int, ...]
    epilogue: Epilogue
    crossover_scale: float = 1.0
    threads: int = 1

    def __init__(self, node: Node, w: Array, bias: Array | None, bias_known: bool, threads: int) -> None:
        """The fields every layer has; subclasses parse their own attributes after this."""
        self.name, self.op_type = node.name, node.op_type
        self.epilogue = Epilogue.from_attrs(node.attrs)
        self.weight_shape = tuple(w.shape)
        self.threads = threads
        self._w, self._bias, self._bias_known = w, bias, bias_known

    @property
    def weight_size(self) -> int:
        """Number of weight values."""
        return int(np.prod(self.weight_shape))

    @functools.cached_property
    def dense(self) -> Callable[..., Any]:
        """The dense implementation the planner runs, taking the op's positional inputs.

        Built on first access (the cost model never builds it).
        """
        return self._build_dense()

    def sparse_kernel(self) -> SparseKernel | None:
        """The zero-skipping kernel (built on the first call, then the same object), or None
        where none applies (an unfused op, an epilogue the kernels lack, a bias known only at
        run time, an unsupported shape or dtype)."""
        if not hasattr(self, "_sparse"):
            self._sparse = self._build_sparse()
        return self._sparse

    def family(self, x_shape: tuple[int, ...] | None) -> str | None:  # pragma: no cover - interface
        """The crossover family deciding this layer on an input of ``x_shape``, or None."""
        raise NotImplementedError

    def cost(self, x_shape: tuple[int, ...] | None,
             out_shape: tuple[int, ...] | None = None) -> LayerWork:  # pragma: no cover - interface
        """FLOPs and weight bytes at input ``x_shape`` (output shape derived where not given)."""
        raise NotImplementedError

    def share_weights(self, graph: Graph, sparse: SparseKernel) -> bool:
        """Let the dense path read its weights from ``sparse``'s layout (held once); default: no.

        Returns:
            Whether ``graph``'s weight initializer was replaced by a view.
        """
        return False

    def _build_dense(self) -> Callable[..., Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def _build_sparse(self) -> SparseKernel | None:  # pragma: no cover - interface
        raise NotImplementedError


Preparer = Callable[[Node, Mapping[str, Array], Any], "PreparedLayer | None"]
_PREPARERS: dict[str, Preparer] = {}


def register_prepare(*op_types: str) -> Callable[[Preparer], Preparer]:
    """Register ``fn(node, constants, ctx) -> PreparedLayer | None`` for ``op_types``.

    Op types are unique across ONNX's domain and the runtime's own (``FusedConv`` is only
    internal), so the key is the op type alone; nodes of other domains (onnxruntime's
    ``com.microsoft`` FusedGemm, say) get no prepared layer.

    Raises:
        ValueError: an op type already has a prepare.
    """
    def deco(fn: Preparer) -> Preparer:
        for op in op_types:
            if op in _PREPARERS:
                raise ValueError(f"duplicate prepare for {op!r}: {_PREPARERS[op].__module__} and {fn.__module__}")
            _PREPARERS[op] = fn
        return fn

    return deco


def prepare(node: Node, constants: Mapping[str, Array], ctx: Any = None) -> PreparedLayer | None:
    """The prepared layer of ``node``, or None when its op has no prepare or its weights are not constant.

    Args:
        node: a graph node.
        constants: the graph's initializers by name.
        ctx: the plan context (``threads`` for the sparse kernel), or None (one thread).

    Returns:
        The :class:`PreparedLayer`, or None (also for an op of another domain).
    """
    from edge_runtime import ops  # noqa: F401  (the op modules register their prepares)

    fn = _PREPARERS.get(node.op_type) if node.domain in _DOMAINS else None
    return None if fn is None else fn(node, constants, ctx)


def const_input(node: Node, constants: Mapping[str, Array], i: int) -> tuple[bool, Array | None]:
    """(known, value) of input ``i``: known is False for a tensor computed at run time; an omitted
    optional input is known and None."""
    name = node.inputs[i] if len(node.inputs) > i else ""
    if not name:
        return True, None
    value = constants.get(name)
    return value is not None, value
