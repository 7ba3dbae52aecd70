"""A plan: the optimised graph and its ready-to-run steps (numba-free, shared by both engines)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edge_runtime.graph import Graph, Node


@dataclass(frozen=True)
class Step:
    """One node, ready to run: ``fn(*[values[name] for name in node.reads])`` (its inputs, then the
    outer-scope tensors its subgraphs read)."""

    node: Node
    fn: Callable[..., Any]
    release: tuple[str, ...]  # tensors no later step reads: freed after this step


@dataclass(frozen=True)
class Plan:
    """The optimised graph and its steps."""

    graph: Graph
    steps: tuple[Step, ...]
