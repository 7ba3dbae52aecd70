"""Sort nodes topologically; reject cycles and tensors nobody produces."""
from __future__ import annotations

from collections import deque

from edge_runtime.errors import InvalidModelError
from edge_runtime.graph import Graph, Node


def run(graph: Graph) -> tuple[Graph, bool]:
    """Return the graph with nodes in execution order.

    Raises:
        InvalidModelError: a node reads a tensor that is neither a graph input, an initializer
            nor produced by a node (e.g. a missing initializer), or the graph has a cycle.
    """
    available = {vi.name for vi in graph.inputs} | set(graph.initializers) | {""}
    producers = graph.producers()
    for node in graph.nodes:
        for name in node.reads:  # a subgraph's outer-scope reads too: its node must run after their producers
            if name not in available and name not in producers:
                raise InvalidModelError(
                    f"node '{node.name}' ({node.op_type}) reads tensor '{name}', which is not a graph "
                    f"input, not an initializer and not produced by any node (a missing initializer?). "
                    f"The model file is incomplete: re-export it, and keep external data files next to it.")
    for vi in graph.outputs:
        if vi.name not in available and vi.name not in producers:
            raise InvalidModelError(f"graph output '{vi.name}' is produced by no node and is not an input "
                                    f"or initializer; the model is malformed. Re-export it.")
    order = _kahn(graph.nodes, producers)
    changed = any(a is not b for a, b in zip(order, graph.nodes))
    return graph.replace(nodes=tuple(order)), changed


def _kahn(nodes: tuple[Node, ...], producers: dict[str, Node]) -> list[Node]:
    index = {id(n): i for i, n in enumerate(nodes)}
    deps: list[set[int]] = []
    users: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        d = {index[id(producers[x])] for x in n.reads if x in producers}
        deps.append(d)
        for j in d:
            users[j].append(i)
    remaining = [len(d) for d in deps]
    ready = deque(i for i, r in enumerate(remaining) if r == 0)
    order: list[Node] = []
    while ready:
        i = ready.popleft()
        order.append(nodes[i])
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        stuck = [nodes[i].name for i, r in enumerate(remaining) if r > 0][:5]
        raise InvalidModelError(
            f"the graph has a cycle: nodes {stuck} (and {max(0, sum(r > 0 for r in remaining) - 5)} more) "
            f"depend on each other's outputs. ONNX graphs must be acyclic; re-export the model.")
    return order
