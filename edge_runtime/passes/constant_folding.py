"""Evaluate nodes whose inputs are all constants once, at plan time."""
from __future__ import annotations

import logging

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.graph import Graph
from edge_runtime.ops import registry

log = logging.getLogger(__name__)

#: Ops never folded: random ops must produce fresh values on every run.
_NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                      "Bernoulli"}


def run(graph: Graph) -> tuple[Graph, bool]:
    """Replace constant subgraphs by initializers (nodes must be in topological order)."""
    consts = dict(graph.initializers)
    kept = []
    for node in graph.nodes:
        if node.op_type in _NON_DETERMINISTIC or not all(x == "" or x in consts for x in node.inputs):
            kept.append(node)
            continue
        try:
            impl, _ = registry.resolve(node.domain, node.op_type, graph.opset(node.domain))
            args = [consts[x] if x else None for x in node.inputs]
            result = impl.fn(*args, **node.attrs)
        except EdgeRuntimeError:
            kept.append(node)  # unsupported here: the planner reports it with full context
            continue
        except Exception as exc:  # a kernel that cannot fold this case: run it at inference time
            log.debug("not folding %s (%s): %s", node.name, node.op_type, exc)
            kept.append(node)
            continue
        results = result if isinstance(result, tuple) else (result,)
        for name, value in zip(node.outputs, results):
            if name:
                consts[name] = np.asarray(value)
    changed = len(kept) != len(graph.nodes)
    return graph.replace(nodes=tuple(kept), initializers=consts), changed
