"""The runtime's graph IR: a frozen, numpy-valued view of an ONNX graph.

Planner passes take a :class:`Graph` and return a new one; nothing here mutates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

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
    """

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""

    def replace(self, **changes: Any) -> "Node":
        """A copy with some fields changed."""
        values = {f: getattr(self, f) for f in ("op_type", "inputs", "outputs", "attrs", "name", "domain")}
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
        """Map each tensor name to the nodes that read it."""
        result: dict[str, list[Node]] = {}
        for n in self.nodes:
            for name in n.inputs:
                if name:
                    result.setdefault(name, []).append(n)
        return result
