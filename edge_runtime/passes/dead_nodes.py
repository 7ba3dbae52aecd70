"""Remove nodes whose outputs no graph output depends on, and unused initializers."""
from __future__ import annotations

from edge_runtime.graph import Graph


def run(graph: Graph) -> tuple[Graph, bool]:
    """Keep only nodes that contribute to a graph output (nodes are in topological order).

    A tensor read only inside a subgraph (an If branch reading an outer value) is needed
    by the subgraph's node: :attr:`Node.reads` includes it.
    """
    needed = {vi.name for vi in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if any(out in needed for out in node.outputs):
            kept.append(node)
            needed.update(x for x in node.reads if x)
    kept.reverse()
    inits = {k: v for k, v in graph.initializers.items() if k in needed}
    changed = len(kept) != len(graph.nodes) or len(inits) != len(graph.initializers)
    return graph.replace(nodes=tuple(kept), initializers=inits), changed
