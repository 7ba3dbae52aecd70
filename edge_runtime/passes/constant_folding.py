"""Evaluate nodes whose inputs are all constants once, at plan time, within a size limit.

A folded result lives in memory for the session's life, so results above
:func:`edge_runtime.resources.fold_limit_bytes` (64 MiB by default, like onnxruntime's
~1 GB cap but sized for a device) are left to run at inference time. ConstantOfShape,
Expand, Tile and Range declare their output size in their inputs: it is checked before
anything is allocated, and a size beyond the memory this process can allocate is an
InvalidModelError naming the node.
"""
from __future__ import annotations

import logging

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.graph import Graph
from edge_runtime.ops import registry
from edge_runtime.resources import check_allocation, declared_bytes, fold_limit_bytes

log = logging.getLogger(__name__)

#: Ops never folded: random ops must produce fresh values on every run. Nodes with subgraphs
#: (If, Loop, Scan) are not folded either: they run only from a plan (ops/control_flow.py).
_NON_DETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                      "Bernoulli"}


def run(graph: Graph, *, limit_bytes: int | None = None) -> tuple[Graph, bool]:
    """Replace constant subgraphs by initializers (nodes must be in topological order).

    Args:
        graph: the graph.
        limit_bytes: largest result folded (default :func:`fold_limit_bytes`).

    Returns:
        (the new graph, whether anything was folded).

    Raises:
        InvalidModelError: a ConstantOfShape/Expand/Tile/Range with constant inputs declares
            a tensor larger than the memory this process can allocate.
    """
    limit = fold_limit_bytes() if limit_bytes is None else limit_bytes
    consts = dict(graph.initializers)
    kept = []
    for node in graph.nodes:
        if node.op_type in _NON_DETERMINISTIC or node.subgraphs() or node.implicit_inputs \
                or not all(x == "" or x in consts for x in node.inputs):
            kept.append(node)
            continue
        args = [consts[x] if x else None for x in node.inputs]
        size = declared_bytes(node.op_type, args, node.attrs)
        if size is not None:
            check_allocation(size, f"node '{node.name}' ({node.op_type}) declares an output that",
                             "the model asks for a tensor this device cannot hold; fix the shape in the model.")
            if size > limit:
                kept.append(node)
                continue
        try:
            impl, _ = registry.resolve(node.domain, node.op_type, graph.opset(node.domain))
            result = impl.fn(*args, **node.attrs)
        except EdgeRuntimeError:
            kept.append(node)  # unsupported here: the planner reports it with full context
            continue
        except Exception as exc:  # a kernel that cannot fold this case: run it at inference time
            log.debug("not folding %s (%s): %s", node.name, node.op_type, exc)
            kept.append(node)
            continue
        results = result if isinstance(result, tuple) else (result,)
        if sum(np.asarray(r).nbytes for r in results if r is not None) > limit:
            log.debug("not folding %s (%s): result above %d bytes", node.name, node.op_type, limit)
            kept.append(node)
            continue
        for name, value in zip(node.outputs, results):
            if name:
                consts[name] = np.asarray(value)
    changed = len(kept) != len(graph.nodes)
    return graph.replace(nodes=tuple(kept), initializers=consts), changed
