"""The runtime's graph IR: a frozen, numpy-valued view of an ONNX graph.

Planner passes take a :class:`Graph` and return a new one; nothing here mutates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from numpy.typing import NDArray

#: The ONNX domain of the runtime's own nodes (fused layers, engine segments and islands).
INTERNAL_DOMAIN = "ai.edge_runtime"


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output: name, element dtype and shape (ints, or str for symbolic dims)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...] | None  # None: rank unknown


@dataclass(frozen=True)
class Node:
    """One operator application.

    ``inputs`` keeps ONNX's positional convention: an omitted optional input is ``""``.
    ``attrs`` holds Python values (int, float, str, list, ndarray, or Graph for subgraphs).
    ``implicit_inputs`` are the outer-scope tensors its subgraphs read (If/Loop/Scan bodies):
    passes treat them as reads of the node, and the executor passes them after ``inputs``.
    """

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    implicit_inputs: tuple[str, ...] = ()

    @property
    def reads(self) -> tuple[str, ...]:
        """Every tensor the node reads: its inputs (``""`` for omitted ones), then its implicit inputs."""
        return self.inputs + self.implicit_inputs

    def subgraphs(self) -> tuple["Graph", ...]:
        """The node's subgraph attributes (If branches, Loop/Scan bodies), in attribute order."""
        return tuple(v for v in self.attrs.values() if isinstance(v, Graph))

    def replace(self, **changes: Any) -> "Node":
        """A copy with some fields changed."""
        values = {f: getattr(self, f) for f in
                  ("op_type", "inputs", "outputs", "attrs", "name", "domain", "implicit_inputs")}
        values.update(changes)
        return Node(**values)


@dataclass(frozen=True)
class Graph:
    """Nodes (in any order until the planner sorts them), constants, inputs, outputs and opsets."""

    nodes: tuple[Node, ...]
    initializers: Mapping[str, NDArray[Any]]
    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    opsets: Mapping[str, int]
    metadata: Mapping[str, str] = field(default_factory=dict)
    name: str = ""

    def replace(self, **changes: Any) -> "Graph":
        """A copy with some fields changed."""
        values = {f: getattr(self, f) for f in
                  ("nodes", "initializers", "inputs", "outputs", "opsets", "metadata", "name")}
        values.update(changes)
        return Graph(**values)

    def opset(self, domain: str) -> int:
        """The model's opset for ``domain`` ('' and 'ai.onnx' are the default domain)."""
        key = "" if domain == "ai.onnx" else domain
        return int(self.opsets.get(key, self.opsets.get("ai.onnx", 1) if key == "" else 1))

    def producers(self) -> dict[str, Node]:
        """Map each produced tensor name to its node."""
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Map each tensor name to the nodes that read it (subgraph reads count as reads of their node)."""
        result: dict[str, list[Node]] = {}
        for n in self.nodes:
            for name in n.reads:
                if name:
                    result.setdefault(name, []).append(n)
        return result


def walk(nodes: Iterable[Node]) -> Iterator[Node]:
    """``nodes`` and, depth first after each, the nodes of its subgraphs (nested ones too)."""
    for node in nodes:
        yield node
        for sub in node.subgraphs():
            yield from walk(sub.nodes)


def unbounded_loops(graph: Graph) -> list[str]:
    """Names of the Loop nodes (subgraphs searched) without a trip count: only data ends them, so a
    synthetic warm-up input may never do so (torch.while_loop exports this form)."""
    return [n.name for n in walk(graph.nodes) if n.op_type == "Loop" and (not n.inputs or not n.inputs[0])]


def outer_reads(graph: Graph) -> tuple[str, ...]:
    """The names ``graph`` (a subgraph) reads from enclosing scopes, in first-use order.

    A name is local when it is a formal input, an initializer or produced by one of the
    graph's nodes; a subgraph output may name an outer tensor directly, and counts too.
    """
    local = {vi.name for vi in graph.inputs} | set(graph.initializers) | {""}
    local.update(out for n in graph.nodes for out in n.outputs)
    reads = [x for n in graph.nodes for x in n.reads] + [vi.name for vi in graph.outputs]
    return tuple(dict.fromkeys(x for x in reads if x not in local))
