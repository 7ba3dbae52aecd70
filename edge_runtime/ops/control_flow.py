"""Control flow: If, Loop and Scan, whose subgraphs run as plans of their own.

Each op registers a plan-time builder: the planner plans every subgraph once (same passes,
same kernels, :func:`edge_runtime.planner.build`), and the returned callable runs the
chosen branch or each iteration with :func:`edge_runtime.executor.execute`. A subgraph's
reads of outer-scope tensors are the node's ``implicit_inputs`` (onnx_io.py); the executor
passes their values after the node's inputs, and they are bound by name in the subgraph.

Limits, as in onnxruntime or stricter:

- a Loop without trip count runs until the body's condition output is false, forever if it
  never is (onnxruntime does the same); a session of a model with such a Loop does no warm-up
  run on a synthetic input, which might never end it (:func:`edge_runtime.graph.unbounded_loops`);
- tensors only: sequence and optional values (SequenceInsert in a body, optional
  loop-carried values) are not supported;
- the registered plain functions refuse to run outside a plan (their subgraphs need one).

The outputs of a zero-trip Loop's scan outputs and of an empty Scan take the shape declared
by the body's output (``(0,)`` plus its static dims), else ``(0,)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge_runtime.errors import ExecutionError, InvalidModelError
from edge_runtime.graph import Graph, Node, ValueInfo, outer_reads
from edge_runtime.ops.registry import register, register_builder


@dataclass(frozen=True)
class _Body:
    """A planned subgraph: its formal input and output names, and the outer names it reads."""

    plan: Any                # edge_runtime.plan.Plan
    inputs: tuple[str, ...]
    outputs: tuple[ValueInfo, ...]
    output_names: tuple[str, ...]
    run_in: Callable[..., list[Any]]  # edge_runtime.executor.run_in (imported at plan time: no cycle)

    @staticmethod
    def build(graph: Graph, ctx: Any) -> "_Body":
        """Plan ``graph`` with its outer-scope reads declared as extra inputs (fed by name)."""
        from edge_runtime import executor, planner

        outer = tuple(ValueInfo(name, np.dtype(np.float32), None) for name in outer_reads(graph))
        plan = planner.build(graph.replace(inputs=graph.inputs + outer), ctx)
        return _Body(plan, tuple(vi.name for vi in graph.inputs), graph.outputs,
                     tuple(vi.name for vi in graph.outputs), executor.run_in)

    def scope(self, env: Mapping[str, Any]) -> dict[str, Any]:
        """The values every run of the body starts from: its constants and the outer tensors."""
        values = dict(self.plan.graph.initializers)
        values.update(env)
        return values

    def run(self, formal: Sequence[Any], scope: Mapping[str, Any]) -> list[Any]:
        """Run once: ``formal`` bound to the formal inputs, on top of :meth:`scope`'s values."""
        values = dict(scope)
        values.update(zip(self.inputs, formal))
        return self.run_in(self.plan, values, self.output_names)

    def empty(self, k: int) -> np.ndarray:
        """A zero-length stack of output ``k`` (its declared static dims, else shape ``(0,)``)."""
        vi = self.outputs[k]
        dims = vi.shape if vi.shape is not None and all(isinstance(d, int) for d in vi.shape) else ()
        return np.zeros((0, *dims), vi.dtype)


def _plan_only(op: str) -> ExecutionError:
    return ExecutionError(f"{op} runs its subgraphs from a plan: run the model with edge_runtime.InferenceSession "
                          f"(the planner builds {op}'s kernel), not by calling the op function directly.")


def _scalar_bool(value: Any, what: str) -> bool:
    if type(value) is np.ndarray and value.size == 1:
        return bool(value)
    array = np.asarray(value)
    if array.size != 1:
        raise ExecutionError(f"{what} must hold one element, got shape {array.shape}; fix the model.")
    return bool(array.reshape(-1)[0])


def _binder(node: Node) -> Callable[[Sequence[Any]], tuple[list[Any], dict[str, Any]]]:
    """Split the executor's arguments into the node's inputs and its outer-scope tensors by name."""
    n = len(node.inputs)
    names = node.implicit_inputs

    def bind(args: Sequence[Any]) -> tuple[list[Any], dict[str, Any]]:
        return list(args[:n]), dict(zip(names, args[n:]))

    return bind


# ---------------------------------------------------------------- If

@register("If")
def If(cond, *outer, then_branch, else_branch):
    """ONNX If (all versions; they differ in types only)."""
    raise _plan_only("If")


@register_builder("If")
def _build_if(node: Node, consts: Sequence[Any], ctx: Any) -> Callable[..., Any]:
    then_body, else_body = _Body.build(node.attrs["then_branch"], ctx), _Body.build(node.attrs["else_branch"], ctx)
    bind = _binder(node)

    def run_if(*args: Any) -> tuple[np.ndarray, ...]:
        (cond,), env = bind(args)
        body = then_body if _scalar_bool(cond, f"If '{node.name}' condition") else else_body
        return tuple(np.asarray(v) for v in body.run((), body.scope(env)))  # the branches may differ in shape (and so the outputs)

    return run_if


# ---------------------------------------------------------------- Loop

@register("Loop")
def Loop(M=None, cond=None, *v_initial, body):
    """ONNX Loop (opset 1 on; later versions add types only)."""
    raise _plan_only("Loop")


@register_builder("Loop")
def _build_loop(node: Node, consts: Sequence[Any], ctx: Any) -> Callable[..., Any]:
    body = _Body.build(node.attrs["body"], ctx)
    n_carried = len(node.inputs) - 2
    n_scan = len(body.outputs) - 1 - n_carried
    if n_carried < 0 or n_scan < 0 or len(body.inputs) != 2 + n_carried:
        raise InvalidModelError(
            f"Loop '{node.name}' has {len(node.inputs)} inputs and a body with {len(body.inputs)} inputs and "
            f"{len(body.outputs)} outputs; the body takes (iteration, condition, N carried values) and returns "
            f"(condition, N carried values, K scan outputs). Re-export the model.")
    bind = _binder(node)

    def run_loop(*args: Any) -> tuple[np.ndarray, ...]:
        (trip, cond, *carried), env = bind(args)
        return _loop(body, trip, cond, carried, n_scan, env)

    return run_loop


def _loop(body: _Body, trip: Any, cond: Any, carried: list[Any], n_scan: int,
          env: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    """Iterate while ``i < trip`` (no bound without one) and the condition holds; the body's
    condition output replaces the condition after every iteration (as onnxruntime does)."""
    limit = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
    keep = True if cond is None else _scalar_bool(cond, "Loop condition")
    scans: list[list[np.ndarray]] = [[] for _ in range(n_scan)]
    n = len(carried)
    scope = body.scope(env)
    i = 0
    while keep and (limit is None or i < limit):
        outs = body.run((np.array(i, np.int64), np.array(keep), *carried), scope)
        keep = _scalar_bool(outs[0], "Loop body's condition output")
        carried = outs[1:1 + n]
        for stack, value in zip(scans, outs[1 + n:]):
            stack.append(value)
        i += 1
    stacked = [np.stack(s) if s else body.empty(1 + n + k) for k, s in enumerate(scans)]
    return (*(np.array(v) if type(v) is not np.ndarray else v for v in carried), *stacked)


# ---------------------------------------------------------------- Scan

@register("Scan", since_version=8)
def Scan_8(sequence_lens, *initial_state_and_scan_inputs, body, num_scan_inputs, directions=None):
    """ONNX Scan-8: a leading batch axis on every input, optional per-batch sequence lengths."""
    raise _plan_only("Scan")


@register("Scan", since_version=9)
def Scan(*initial_state_and_scan_inputs, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):
    """ONNX Scan-9 and later: scan axes and directions per input and output, no batch axis."""
    raise _plan_only("Scan")


@dataclass(frozen=True)
class _ScanSpec:
    """Scan's attributes, normalised: one axis and one direction (1 = reverse) per scan input/output."""

    n_state: int
    in_axes: tuple[int, ...]
    in_dirs: tuple[int, ...]
    out_axes: tuple[int, ...]
    out_dirs: tuple[int, ...]


def _spec(node: Node, body: _Body, n_inputs: int) -> _ScanSpec:
    a = node.attrs
    n_in = int(a["num_scan_inputs"])
    n_state = n_inputs - n_in
    n_out = len(body.outputs) - n_state
    if n_state < 0 or n_out < 0 or len(body.inputs) != n_state + n_in:
        raise InvalidModelError(
            f"Scan '{node.name}' has {n_inputs} state and scan inputs (num_scan_inputs={n_in}) but a body with "
            f"{len(body.inputs)} inputs and {len(body.outputs)} outputs; the body takes (N states, M scan "
            f"elements) and returns (N states, K scan outputs). Re-export the model.")
    in_dirs = a.get("scan_input_directions") or a.get("directions") or [0] * n_in
    return _ScanSpec(n_state, tuple(a.get("scan_input_axes") or [0] * n_in), tuple(in_dirs),
                     tuple(a.get("scan_output_axes") or [0] * n_out),
                     tuple(a.get("scan_output_directions") or [0] * n_out))


def _scan(body: _Body, spec: _ScanSpec, states: list[Any], xs: Sequence[np.ndarray], length: int,
          env: Mapping[str, Any]) -> tuple[list[Any], list[np.ndarray]]:
    """Run ``length`` steps; the final states and each scan output's stack (axis 0, in step order)."""
    axes = [ax % x.ndim for ax, x in zip(spec.in_axes, xs)]
    stacks: list[list[np.ndarray]] = [[] for _ in range(len(body.outputs) - spec.n_state)]
    scope = body.scope(env)
    for t in range(length):
        elems = [np.take(x, length - 1 - t if d else t, axis=ax) for x, ax, d in zip(xs, axes, spec.in_dirs)]
        outs = body.run((*states, *elems), scope)
        states = outs[:spec.n_state]
        for stack, value in zip(stacks, outs[spec.n_state:]):
            stack.append(value)
    ys = [np.stack(s[::-1] if d else s) if s else body.empty(spec.n_state + k)
          for k, (s, d) in enumerate(zip(stacks, spec.out_dirs))]
    return [np.asarray(s) for s in states], ys


@register_builder("Scan", since_version=9)
def _build_scan(node: Node, consts: Sequence[Any], ctx: Any) -> Callable[..., Any]:
    body = _Body.build(node.attrs["body"], ctx)
    spec = _spec(node, body, len(node.inputs))
    bind = _binder(node)

    def run_scan(*args: Any) -> tuple[np.ndarray, ...]:
        inputs, env = bind(args)
        states, xs = inputs[:spec.n_state], [np.asarray(x) for x in inputs[spec.n_state:]]
        length = xs[0].shape[spec.in_axes[0] % xs[0].ndim]
        states, ys = _scan(body, spec, states, xs, length, env)
        ys = [np.moveaxis(y, 0, ax % y.ndim) for y, ax in zip(ys, spec.out_axes)]
        return (*states, *ys)

    return run_scan


@register_builder("Scan", since_version=8)
def _build_scan_8(node: Node, consts: Sequence[Any], ctx: Any) -> Callable[..., Any]:
    body = _Body.build(node.attrs["body"], ctx)
    spec = _spec(node, body, len(node.inputs) - 1)
    bind = _binder(node)

    def run_scan_8(*args: Any) -> tuple[np.ndarray, ...]:
        (lens, *inputs), env = bind(args)
        states, xs = inputs[:spec.n_state], [np.asarray(x) for x in inputs[spec.n_state:]]
        batch, full = xs[0].shape[0], xs[0].shape[1]
        finals, outs = [], []
        for b in range(batch):  # each batch entry scans its own sequence length; the rest stays zero
            length = full if lens is None else int(np.asarray(lens).reshape(-1)[b])
            s, ys = _scan(body, spec, [st[b] for st in states], [x[b, :length] for x in xs], length, env)
            finals.append(s)
            outs.append([np.concatenate([y, np.zeros((full - length, *y.shape[1:]), y.dtype)]) for y in ys])
        return (*(np.stack(f) for f in zip(*finals)), *(np.stack(y) for y in zip(*outs)))

    return run_scan_8
