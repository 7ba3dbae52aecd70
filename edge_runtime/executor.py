"""The run loop: a flat pass over the plan's steps, with no op-specific branches.

Control-flow ops (ops/control_flow.py) call :func:`execute` on their subgraphs' plans.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge_runtime.dispatch import exact_densities
from edge_runtime.errors import EdgeRuntimeError, ExecutionError
from edge_runtime.plan import Plan, Step


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
            f"allocate (MemoryError: {exc}); its inputs {list(step.node.reads)} had (shape, dtype) {shapes}. "
            f"The model (or the input size) asks for a tensor too large for this device; use a smaller input "
            f"or fix the model.")
    return ExecutionError(
        f"node '{step.node.name}' ({step.node.op_type}) failed: {type(exc).__name__}: {exc}. Its inputs "
        f"{list(step.node.reads)} had (shape, dtype) {shapes}. If the input feed has the shapes the model "
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


def run_in(plan: Plan, values: dict[str, Any], wanted: Sequence[str]) -> list[Any]:
    """Run every step in ``values`` (constants and inputs by name, consumed: freed tensors are
    removed) and return the ``wanted`` tensors as they are, views included.

    For control-flow bodies (ops/control_flow.py): they run once per iteration, the caller keeps
    the values it needs from one to the next, and nothing is written in place, so the copies
    :func:`execute` makes for the user are not needed.
    """
    _run_fast(_program(plan), values)
    return [values[name] for name in wanted]


def _execute(plan: Plan, feed: Mapping[str, np.ndarray], wanted: list[str],
             stats: list[NodeStats] | None) -> list[np.ndarray]:
    values: dict[str, Any] = dict(plan.graph.initializers)
    values.update(feed)
    if stats is None:
        _run_fast(_program(plan), values)
    else:
        _run_with_stats(plan, values, stats)
    fed = {id(v) for v in feed.values()}
    return [_owned(values[name], fed) for name in wanted]


# One instruction per step: (arity code, fn, input names, first output, outputs, release, step).
# Arity 1 and 2 (most plain ops) index ``values`` directly, without building an argument list.
_Instr = tuple[int, Callable[..., Any], tuple[str, ...], str, tuple[str, ...], tuple[str, ...], Step]
_PROGRAMS: dict[int, tuple[weakref.ref, tuple[_Instr, ...]]] = {}


def _program(plan: Plan) -> tuple[_Instr, ...]:
    """The plan's steps as flat tuples, built once per plan (cached by identity, dropped with the plan)."""
    cached = _PROGRAMS.get(id(plan))
    if cached is not None and cached[0]() is plan:
        return cached[1]
    program = []
    for step in plan.steps:
        names = step.node.reads
        arity = len(names) if len(names) in (1, 2) and all(names) else 0
        program.append((arity, step.fn, names, step.node.outputs[0], tuple(step.node.outputs),
                        tuple(step.release), step))
    key = id(plan)
    _PROGRAMS[key] = (weakref.ref(plan, lambda _ref, key=key: _PROGRAMS.pop(key, None)), tuple(program))
    return _PROGRAMS[key][1]


def _run_fast(program: tuple[_Instr, ...], values: dict[str, Any]) -> None:
    """The run loop without statistics: about 0.3 us per step on top of the op itself."""
    for arity, fn, names, out0, outs, release, step in program:
        try:
            if arity == 1:
                result = fn(values[names[0]])
            elif arity == 2:
                result = fn(values[names[0]], values[names[1]])
            else:
                result = fn(*[values[x] if x else None for x in names])
        except EdgeRuntimeError:
            raise
        except Exception as exc:
            raise _fail(step, [values.get(x) if x else None for x in names], exc) from exc
        if isinstance(result, tuple):
            for name, value in zip(outs, result):
                if name:
                    values[name] = value
        else:
            values[out0] = result
        for name in release:
            values.pop(name, None)


def _run_with_stats(plan: Plan, values: dict[str, Any], stats: list[NodeStats]) -> None:
    timer = time.perf_counter
    for step in plan.steps:
        args = [values[x] if x else None for x in step.node.reads]
        t0 = timer()
        try:
            result = step.fn(*args)
        except EdgeRuntimeError:
            raise
        except Exception as exc:
            raise _fail(step, args, exc) from exc
        elapsed = timer() - t0
        if isinstance(result, tuple):
            for name, value in zip(step.node.outputs, result):
                if name:
                    values[name] = value
        else:
            values[step.node.outputs[0]] = result
        first = result[0] if isinstance(result, tuple) else result
        stats.append(NodeStats(step.node.name, step.node.op_type, getattr(step.fn, "last_kernel", "plain"),
                               getattr(step.fn, "last_density", None), elapsed, tuple(np.shape(first))))
        for name in step.release:
            values.pop(name, None)


def _owned(value: Any, fed: set[int]) -> np.ndarray:
    """An output the caller may keep and modify: views (of an input, a constant or another tensor)
    and the caller's own input arrays (an output that is an input, or an Identity of one) are copied."""
    array = np.asarray(value)
    return array if array.flags.owndata and array.flags.writeable and id(array) not in fed else array.copy()
