"""Rewrite GELU subgraphs (and ONNX's Gelu op) into one internal ``FusedGelu`` node.

Recognised forms, with any operand order of the commutative Add/Mul nodes:

- erf form (TorchScript exporter, HF-style code)::

      s = Erf(x / 1.4142135) + 1          (or Erf(x * 0.70710677))
      y = (x * s) * 0.5 | (x * 0.5) * s | (s * 0.5) * x | (x * s) / 2

- tanh form (``nn.GELU(approximate="tanh")`` through TorchScript)::

      u = 0.7978846 * (x + 0.044715 * x^3)  (x^3 = Pow(x, 3) | x * x * x)
      y = the same product of x, 0.5 and Tanh(u) + 1

- ``Gelu`` (opset 20, what torch's dynamo exporter emits) becomes ``FusedGelu`` with
  the same ``approximate``.

Every intermediate tensor must be read only by the pattern and not be a graph output;
constants must match to 1e-4 relative, so a lookalike (another scale, a sigmoid, a
shared intermediate) is left alone.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from edge_runtime.graph import Graph, Node
from edge_runtime.ops.registry import INTERNAL_DOMAIN

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715


class _Ctx:
    """Graph facts the matchers need: producers, consumer counts, constants, outputs."""

    def __init__(self, graph: Graph) -> None:
        self.producers = graph.producers()
        self.readers = graph.consumers()
        self.uses = {k: len(v) for k, v in self.readers.items()}
        self.consts: Mapping[str, np.ndarray] = graph.initializers
        self.outputs = {vi.name for vi in graph.outputs}

    def scalar(self, name: str, value: float) -> bool:
        """``name`` is a one-element constant equal to ``value`` (1e-4 relative)."""
        c = self.consts.get(name)
        return c is not None and c.size == 1 and math.isclose(float(c.reshape(-1)[0]), value, rel_tol=1e-4)

    def private(self, name: str) -> Node | None:
        """The default-domain producer of ``name`` when only one node reads it and it is not an output."""
        node = self.producers.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or name in self.outputs or self.uses.get(name) != 1:
            return None
        return node

    def sole_reader(self, name: str) -> Node | None:
        """The only node reading ``name`` when ``name`` is not a graph output."""
        readers = self.readers.get(name, [])
        if len(readers) != 1 or name in self.outputs or readers[0].domain not in ("", "ai.onnx"):
            return None
        return readers[0]

    def binary(self, name: str, op: str) -> Node | None:
        """A private two-input ``op`` node producing ``name``."""
        node = self.private(name)
        return node if node is not None and node.op_type == op and len(node.inputs) == 2 else None

    def const_operand(self, node: Node, value: float) -> str | None:
        """The other operand of ``node`` when one operand is the constant ``value``."""
        a, b = node.inputs
        if self.scalar(b, value):
            return a
        if self.scalar(a, value) and node.op_type in ("Mul", "Add"):
            return b
        return None


def _scaled_input(ctx: _Ctx, name: str) -> str | None:
    """x when ``name`` = x / sqrt(2) or x * (1 / sqrt(2))."""
    div = ctx.binary(name, "Div")
    if div is not None:
        return ctx.const_operand(div, _SQRT2)
    mul = ctx.binary(name, "Mul")
    return ctx.const_operand(mul, 1.0 / _SQRT2) if mul is not None else None


def _is_cube(ctx: _Ctx, name: str, x: str) -> bool:
    """``name`` = Pow(x, 3) or x * x * x (either association)."""
    node = ctx.private(name)
    if node is None or len(node.inputs) != 2:
        return False
    if node.op_type == "Pow":
        return node.inputs[0] == x and ctx.scalar(node.inputs[1], 3.0)
    if node.op_type != "Mul" or x not in node.inputs:
        return False
    other = node.inputs[1] if node.inputs[0] == x else node.inputs[0]
    square = ctx.binary(other, "Mul")
    return square is not None and square.inputs == (x, x)


def _tanh_input(ctx: _Ctx, name: str) -> str | None:
    """x when ``name`` = sqrt(2/pi) * (x + 0.044715 * x^3)."""
    mul = ctx.binary(name, "Mul")
    inner = ctx.const_operand(mul, _SQRT_2_OVER_PI) if mul is not None else None
    add = ctx.binary(inner, "Add") if inner is not None else None
    if add is None:
        return None
    for x, w in (add.inputs, add.inputs[::-1]):
        scale = ctx.binary(w, "Mul")
        cube = ctx.const_operand(scale, _CUBIC) if scale is not None else None
        if cube is not None and _is_cube(ctx, cube, x):
            return x
    return None


def _product_root(ctx: _Ctx, s: str, x: str) -> Node | None:
    """The node computing 0.5 * x * s from two Mul (or Mul then Div by 2) nodes, else None."""
    first = ctx.sole_reader(s)
    if first is None or first.op_type != "Mul" or len(first.inputs) != 2:
        return None
    other = first.inputs[1] if first.inputs[0] == s else first.inputs[0]
    if other == x:
        want = {"half"}
    elif ctx.scalar(other, 0.5):
        want = {"x"}
    else:  # (x * 0.5) * s
        half_x = ctx.binary(other, "Mul")
        return first if half_x is not None and ctx.const_operand(half_x, 0.5) == x else None
    t = first.outputs[0]
    last = ctx.sole_reader(t)
    if last is None or len(last.inputs) != 2:
        return None
    rest = last.inputs[1] if last.inputs[0] == t else last.inputs[0]
    if last.op_type == "Mul" and (("half" in want and ctx.scalar(rest, 0.5)) or ("x" in want and rest == x)):
        return last
    if last.op_type == "Div" and "half" in want and last.inputs[0] == t and ctx.scalar(rest, 2.0):
        return last
    return None


def _match(ctx: _Ctx, node: Node) -> tuple[str, str, Node] | None:
    """For an Erf/Tanh node heading a GELU: (x, approximate, root node), else None."""
    x = _scaled_input(ctx, node.inputs[0]) if node.op_type == "Erf" else _tanh_input(ctx, node.inputs[0])
    add = ctx.sole_reader(node.outputs[0]) if x is not None else None
    if add is None or add.op_type != "Add" or len(add.inputs) != 2 or ctx.const_operand(add, 1.0) != node.outputs[0]:
        return None
    root = _product_root(ctx, add.outputs[0], x)
    return (x, "none" if node.op_type == "Erf" else "tanh", root) if root is not None else None


def _pattern_nodes(ctx: _Ctx, root: Node, x: str) -> set[int]:
    """ids of the nodes between ``x`` and ``root`` (inclusive of root, exclusive of x's producer)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        stack.extend(ctx.producers[i] for i in n.inputs if i and i != x and i in ctx.producers)
    return seen


def run(graph: Graph) -> tuple[Graph, bool]:
    """Replace each recognised GELU by one FusedGelu node; nodes must be in topological order."""
    ctx = _Ctx(graph)
    removed: set[int] = set()
    replaced: dict[int, Node] = {}
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Gelu":
            replaced[id(node)] = node.replace(op_type="FusedGelu", domain=INTERNAL_DOMAIN,
                                              attrs={"approximate": str(node.attrs.get("approximate", "none"))})
            continue
        if node.op_type not in ("Erf", "Tanh") or id(node) in removed:
            continue
        found = _match(ctx, node)
        if found is None:
            continue
        x, approximate, root = found
        body = _pattern_nodes(ctx, root, x)
        if body & removed:
            continue
        removed |= body - {id(root)}
        replaced[id(root)] = Node("FusedGelu", (x,), root.outputs, {"approximate": approximate},
                                  name=f"{root.name or root.outputs[0]}/FusedGelu", domain=INTERNAL_DOMAIN)
    if not replaced:
        return graph, False
    nodes = tuple(replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed)
    return graph.replace(nodes=nodes), True
