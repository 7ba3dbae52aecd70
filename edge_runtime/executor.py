"""The run loop: a flat pass over the plan's steps, with no op-specific branches."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edge_runtime.dispatch import exact_densities
from edge_runtime.errors import EdgeRuntimeError, ExecutionError
from edge_runtime.planner import Plan, Step


@dataclass(frozen=True)
class NodeStats:
    """What one node did in one run.

    ``kernel`` is ``"sparse"`` or ``"dense"`` for layers the dispatcher manages and
    ``"plain"`` otherwise; ``density`` is the measured input density (fraction of
    nonzeros) where the dispatcher measured it, else ``None``.
    """

    name: str
    op_type: str
    kernel: str
    density: float | None
    seconds: float
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class RunStats:
    """Per-node statistics of one ``run``, in execution order."""

    nodes: tuple[NodeStats, ...]

    @property
    def total_seconds(self) -> float:
        """Time spent inside kernels (excludes input checks and Python overhead between nodes)."""
        return sum(n.seconds for n in self.nodes)


def _fail(step: Step, args: list[Any], exc: Exception) -> ExecutionError:
    shapes = [None if a is None else (getattr(a, "shape", None), str(getattr(a, "dtype", type(a).__name__)))
              for a in args]
    if isinstance(exc, MemoryError):  # the model's request, not a runtime bug
        return ExecutionError(
            f"node '{step.node.name}' ({step.node.op_type}) needs more memory than this process can "
            f"allocate (MemoryError: {exc}); its inputs {list(step.node.inputs)} had (shape, dtype) {shapes}. "
            f"The model (or the input size) asks for a tensor too large for this device; use a smaller input "
            f"or fix the model.")
    return ExecutionError(
        f"node '{step.node.name}' ({step.node.op_type}) failed: {type(exc).__name__}: {exc}. Its inputs "
        f"{list(step.node.inputs)} had (shape, dtype) {shapes}. If the input feed has the shapes the model "
        f"expects, this is a runtime bug: please report it with the model.")


def execute(plan: Plan, feed: Mapping[str, np.ndarray], wanted: list[str],
            stats: list[NodeStats] | None = None) -> list[np.ndarray]:
    """Run every step and return the ``wanted`` tensors.

    Args:
        plan: the session's plan.
        feed: validated inputs by name.
        wanted: output names to return, in order.
        stats: when a list is given, one NodeStats per step is appended to it (and the
            dispatchers count their whole inputs, so the densities are exact).
    """
    if stats is not None:
        with exact_densities():
            return _execute(plan, feed, wanted, stats)
    return _execute(plan, feed, wanted, None)


def _execute(plan: Plan, feed: Mapping[str, np.ndarray], wanted: list[str],
             stats: list[NodeStats] | None) -> list[np.ndarray]:
    values: dict[str, Any] = dict(plan.graph.initializers)
    values.update(feed)
    timer = time.perf_counter
    for step in plan.steps:
        args = [values[x] if x else None for x in step.node.inputs]
        t0 = timer() if stats is not None else 0.0
        try:
            result = step.fn(*args)
        except EdgeRuntimeError:
            raise
        except Exception as exc:
            raise _fail(step, args, exc) from exc
        if stats is not None:
            elapsed = timer() - t0
        if isinstance(result, tuple):
            for name, value in zip(step.node.outputs, result):
                if name:
                    values[name] = value
        else:
            values[step.node.outputs[0]] = result
        if stats is not None:
            first = result[0] if isinstance(result, tuple) else result
            stats.append(NodeStats(step.node.name, step.node.op_type,
                                   getattr(step.fn, "last_kernel", "plain"),
                                   getattr(step.fn, "last_density", None), elapsed,
                                   tuple(np.shape(first))))
        for name in step.release:
            values.pop(name, None)
    return [_owned(values[name]) for name in wanted]


def _owned(value: Any) -> np.ndarray:
    """An output the caller may keep and modify: views (of an input, a constant or another tensor) are copied."""
    array = np.asarray(value)
    return array if array.flags.owndata and array.flags.writeable else array.copy()
