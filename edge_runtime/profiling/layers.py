"""Per-layer table of an edge_runtime run: where the time goes and what sparsity saved.

Built from the :class:`edge_runtime.RunStats` of a few ``run_with_stats`` calls (made
after the timing loop, so the per-node timers do not slow the timed calls): per node,
the median time over the calls, the median measured input density, the kernel that ran
most often, and the layer's FLOPs from :mod:`edge_runtime.profiling.costmodel`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edge_runtime.graph import Graph
from edge_runtime.profiling.costmodel import layer_cost


@dataclass(frozen=True)
class LayerRow:
    """One node of the plan, summarised over the profiled calls.

    ``density`` is the measured input density (fraction of nonzeros) or None where the
    dispatcher did not measure it; ``flops_skipped`` = ``flops * (1 - density)`` where the
    sparse kernel ran, else 0.

    Example:
        >>> row = LayerRow("fc1", "FusedGemm", (1, 64), 0.2, 50.0, 0.25, "sparse", 8192.0, 6144.0)
        >>> row.to_dict()["kernel"]
        'sparse'
    """

    name: str
    op_type: str
    output_shape: tuple[int, ...]
    time_ms: float
    time_pct: float
    density: float | None
    kernel: str
    flops: float
    flops_skipped: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {**self.__dict__, "output_shape": list(self.output_shape)}


def layer_table(runs: Sequence[Any], graph: Graph, feed_shapes: Mapping[str, tuple[int, ...]]
                ) -> tuple[LayerRow, ...]:
    """Summarise per-node statistics of several calls into one row per node.

    Args:
        runs: ``RunStats`` of each call (same plan, so the same nodes in the same order).
        graph: ``session.plan.graph`` (for weights and node attributes).
        feed_shapes: input name -> shape of the feed used.

    Returns:
        Rows in execution order; ``time_pct`` is the share of the summed median node times.
    """
    if not runs:
        return ()
    first = runs[0].nodes
    shapes = dict(feed_shapes)
    for stat, node in zip(first, graph.nodes):
        shapes[node.outputs[0]] = tuple(stat.output_shape)
    per_node = list(zip(*(r.nodes for r in runs)))
    times = [float(np.median([s.seconds for s in calls])) * 1e3 for calls in per_node]
    total = sum(times) or 1.0
    rows = []
    for calls, ms, node in zip(per_node, times, graph.nodes):  # stats follow the plan's node order
        stat = calls[0]
        densities = [s.density for s in calls if s.density is not None]
        density = float(np.median(densities)) if densities else None
        kernel = Counter(s.kernel for s in calls).most_common(1)[0][0]
        flops = layer_cost(node, graph, shapes).flops
        skipped = flops * (1.0 - density) if kernel == "sparse" and density is not None else 0.0
        rows.append(LayerRow(stat.name, stat.op_type, tuple(stat.output_shape), ms, 100.0 * ms / total,
                             density, kernel, flops, skipped))
    return tuple(rows)


def measured_densities(rows: Sequence[LayerRow]) -> dict[str, float]:
    """Layer name -> measured input density, for the cost model."""
    return {r.name: r.density for r in rows if r.density is not None}
