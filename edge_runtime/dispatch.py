"""Per-layer dense/sparse dispatch (filled in by the sparse-kernel wiring).

``wrap(node, dense_fn, graph, ctx)`` returns the callable a step runs. For layers the
sparse kernels can take over it returns a dispatcher that measures the input's
density on every call and picks the sparse or the dense kernel; otherwise it returns
``dense_fn`` unchanged.
"""
from __future__ import annotations

from typing import Any, Callable

from edge_runtime.graph import Graph, Node


def wrap(node: Node, dense_fn: Callable[..., Any], graph: Graph, ctx: Any) -> Callable[..., Any]:
    """The callable to run for ``node`` (dense only until sparse kernels are wired in)."""
    return dense_fn
