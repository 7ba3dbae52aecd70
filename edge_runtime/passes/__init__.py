"""Planner rewrites, one pass per module, applied in the order of :data:`REQUIRED` then :data:`OPTIMIZATIONS`.

Each pass is ``run(graph) -> (graph, changed)`` and never mutates its input.
"""
from __future__ import annotations

from typing import Callable

from edge_runtime.graph import Graph
from edge_runtime.passes import (constant_folding, dead_nodes, float16, fold_batchnorm, fuse_activation, fuse_gelu,
                                 fuse_lookup, fuse_qdq, quantized_lookup, toposort)

Pass = Callable[[Graph], "tuple[Graph, bool]"]

#: Always run: they make the graph executable (float32 compute, order, validity, no dead work).
REQUIRED: tuple[Pass, ...] = (float16.run, toposort.run, dead_nodes.run)

#: Optimisations, in order; disabled by SessionOptions.graph_optimization_level = ORT_DISABLE_ALL.
OPTIMIZATIONS: tuple[Pass, ...] = (
    fuse_qdq.run,         # before folding: the int8 weights stay int8 (no float copy is folded from them)
    quantized_lookup.run,  # after fuse_qdq: the DQ -> element-wise -> Q chains between QLinearConvs
    fuse_lookup.run,       # after quantized_lookup: a lookup that is a conv's only reader goes into its epilogue
    dead_nodes.run,
    constant_folding.run,
    fold_batchnorm.run,
    fuse_gelu.run,
    fuse_activation.run,
    dead_nodes.run,
)
