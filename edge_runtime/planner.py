"""Plan once, run many: turn a Graph into a flat list of ready-to-call steps.

The planner runs the graph passes, resolves every node to an implementation (a layer with
constant weights to its prepared layer's dense kernel, :mod:`edge_runtime.prepared`; other ops
to a plan-time specialised kernel from a builder, or the plain function), lets the sparse
dispatcher wrap the layers it can take over, and computes when each intermediate tensor can be freed.
"""
from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edge_runtime import dispatch, passes, prepared
from edge_runtime.errors import UnsupportedOpError
from edge_runtime.graph import Graph, Node, walk
from edge_runtime.plan import Plan, Step  # noqa: F401 - re-exported (planner.Plan is the public name)
from edge_runtime.ops import registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanContext:
    """What kernels may specialise on: threads, sparsity mode, crossovers, annotations."""

    threads: int = 1
    sparsity: str = "auto"                      # "auto" | "off" | "force"
    crossover: Mapping[str, float] = field(default_factory=dict)  # kernel family -> max density for sparse
    annotations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # node name -> layer entry
    optimize: bool = True


def optimize(graph: Graph, enabled: bool = True) -> Graph:
    """Run the required passes and, when ``enabled``, the optimisation passes in order."""
    for p in passes.REQUIRED:
        graph, _ = p(graph)
    if enabled:
        for p in passes.OPTIMIZATIONS:
            graph, changed = p(graph)
            log.debug("pass %s: changed=%s", p.__module__, changed)
    return graph


def _check_attributes(node: Node, fn: Callable[..., Any]) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(node.attrs) - allowed)
    if unknown:
        raise UnsupportedOpError(
            f"node '{node.name}' ({node.op_type}) has attribute(s) {unknown} that edge_runtime's "
            f"{node.op_type} does not implement (it supports {sorted(allowed)}). Re-export without them "
            f"or open an issue with the model.")


def _kernel(node: Node, graph: Graph, ctx: PlanContext, producers: dict[str, Node]) -> Callable[..., Any]:
    impl, builder = registry.resolve(node.domain, node.op_type, graph.opset(node.domain))
    _check_attributes(node, impl.fn)
    layer = prepared.prepare(node, graph.initializers, ctx)  # a Conv/Gemm/MatMul with constant weights
    fn = None
    if layer is not None:
        fn = layer.dense
    elif builder is not None:
        consts = [graph.initializers.get(x) if x else None for x in node.inputs]
        fn = builder(node, consts, ctx)
    if fn is None:
        fn = functools.partial(impl.fn, **node.attrs) if node.attrs else impl.fn
    return dispatch.wrap(node, layer, fn, graph, ctx, producers)


def build(graph: Graph, ctx: PlanContext) -> Plan:
    """Optimise ``graph`` and resolve every node.

    Raises:
        UnsupportedOpError: an op (or an attribute of one) is not implemented.
        InvalidModelError: the graph is cyclic or reads a tensor nobody produces.
    """
    graph = optimize(graph, ctx.optimize)
    registry.check_supported(walk(graph.nodes), graph.opset)  # one error naming every missing op, subgraphs too
    outputs = {vi.name for vi in graph.outputs}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for x in node.reads:  # a value a subgraph reads lives until its node has run
            if x and x not in graph.initializers:
                last_use[x] = i
    releases: list[list[str]] = [[] for _ in graph.nodes]
    for name, i in last_use.items():
        if name not in outputs:
            releases[i].append(name)
    producers = graph.producers()
    steps = []
    for i, node in enumerate(graph.nodes):
        # outputs nobody reads (e.g. optional side outputs) are freed right away
        unread = tuple(o for o in node.outputs if o and o not in last_use and o not in outputs)
        steps.append(Step(node, _kernel(node, graph, ctx, producers), tuple(releases[i]) + unread))
    return Plan(graph, tuple(steps))


