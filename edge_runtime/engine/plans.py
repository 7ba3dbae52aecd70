"""The engine's plans: one onnxruntime session of the whole model, or the graph cut into onnxruntime
segments and edge_runtime islands (:mod:`edge_runtime.engine.partition`), as executor plans.

Split out of :mod:`edge_runtime.engine.hybrid`, which decides between them; nothing here measures.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from edge_runtime.engine import islands as isl
from edge_runtime.engine import ort as ortx
from edge_runtime.engine.layout import layout_step
from edge_runtime.engine.partition import ISLAND, constants, partition, submodel
from edge_runtime.graph import INTERNAL_DOMAIN, Graph, Node, ValueInfo
from edge_runtime.plan import Plan, Step
from edge_runtime.resources import release_freed_memory

if TYPE_CHECKING:
    from edge_runtime.engine.hybrid import EngineConfig

log = logging.getLogger("edge_runtime.engine.hybrid")


def whole_graph(model: onnx.ModelProto, inputs: Sequence[ValueInfo], outputs: Sequence[ValueInfo]) -> Graph:
    """The plan graph of a whole-model session: one node."""
    names = tuple(o.name for o in outputs)
    node = Node("OnnxRuntimeSession", tuple(v.name for v in inputs), names, {}, "onnxruntime", INTERNAL_DOMAIN)
    return _plan_graph(model, (node,), inputs, outputs)


def whole_plan(data: bytes | str, graph: Graph, cfg: EngineConfig) -> Plan:
    """One onnxruntime session of the whole model (``data``: its bytes or its file's path)."""
    node = graph.nodes[0]
    session = ortx.make_session(data, cfg.threads, cfg.optimize)
    return Plan(graph, (Step(node, ortx.SegmentStep(session, node.inputs, node.outputs), ()),))


def cut_plan(model: onnx.ModelProto, prepared: Sequence[isl.PreparedIsland], types: Mapping[str, Any],
              cfg: EngineConfig, inputs: Sequence[ValueInfo], outputs: Sequence[ValueInfo],
              limits: Mapping[str, float] | None, record: dict[str, np.ndarray] | None = None) -> Plan | None:
    """The cut graph's plan, or None when a cut tensor's type is unknown."""
    release_freed_memory()  # the decoded weights the islands' layouts replaced: not under the sessions
    stages = partition(model, isl.groups(prepared))
    consts = constants(model.graph)
    layouts = {stage.name: layout_step(model, stage.nodes, stage.inputs, stage.outputs, consts)
               for stage in stages if stage.kind != ISLAND}
    by_name = {p.candidate.name: p for p in prepared}
    spinning = cfg.threads == 1 or sum(step is None for step in layouts.values()) == 1
    steps, nodes = [], []
    try:
        for stage in stages:
            layout = layouts.get(stage.name)
            op_type = model.graph.node[stage.nodes[0]].op_type if stage.kind == ISLAND else \
                "OnnxRuntimeSegment" if layout is None else "LayoutSegment"
            node = Node(op_type, stage.inputs, stage.outputs, {}, stage.name, INTERNAL_DOMAIN)
            if stage.kind == ISLAND:
                fn: Callable[..., Any] = _island_step(by_name[stage.name], cfg, limits, record)
            elif layout is not None:  # numpy views: no onnxruntime call (engine/layout.py)
                fn = layout
            else:
                ortx.check_exchanged([(n, types[n].tensor_type.elem_type) for n in (*stage.inputs, *stage.outputs)],
                                     "a segment's cut tensors")
                sub = submodel(model, stage.nodes, stage.inputs, stage.outputs, types, stage.name)
                fn = ortx.SegmentStep(ortx.make_session(sub, cfg.threads, cfg.optimize, spinning),
                                      stage.inputs, stage.outputs)
            nodes.append(node)
            steps.append((node, fn))
    except KeyError as exc:
        log.info("not cutting the graph: tensor %s has no inferred type", exc)
        return None
    except ortx.OnnxRuntimeRejected as exc:
        log.info("not cutting the graph: onnxruntime rejected a segment (%s)", exc)
        return None
    return Plan(_plan_graph(model, tuple(nodes), inputs, outputs), _with_releases(steps, outputs))


def _island_step(p: isl.PreparedIsland, cfg: EngineConfig, limits: Mapping[str, float] | None,
                 record: dict[str, np.ndarray] | None) -> Callable[..., Any]:
    from edge_runtime.dispatch import Dispatcher
    dense = isl.dense_path(p, lambda sub: ortx.IslandDense(
        ortx.make_session(sub, cfg.threads, cfg.optimize, spinning=False), p.candidate.input))
    if record is not None:
        return _Recorder(p.candidate.name, dense, p.kernel, record)
    mode = "force" if cfg.sparsity == "force" else "auto"
    limit = (limits or {}).get(p.candidate.name, 0.0)
    return Dispatcher(p.candidate.name, dense, p.kernel, {"gemv": limit, "gemm": limit, "conv": limit}, mode)


class _Recorder:
    """The probe's island step: runs dense and keeps the island's input for pricing."""

    last_kernel, last_density = "dense", None

    def __init__(self, name: str, dense: Callable[..., Any], sparse: Any, record: dict[str, np.ndarray]) -> None:
        self.name, self.dense, self.sparse, self.record = name, dense, sparse, record

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.record[self.name] = x
        return self.dense(x)


def step_fn(plan: Plan, name: str) -> Any:
    """The callable of the step named ``name``."""
    return next(s.fn for s in plan.steps if s.node.name == name)


def with_limits(plan: Plan, limits: Mapping[str, float], sparsity: str) -> Plan:
    """The probe plan with each recording island step made a dispatcher at its measured crossover."""
    from edge_runtime.dispatch import Dispatcher
    steps = []
    for s in plan.steps:
        fn = s.fn
        if isinstance(fn, _Recorder):
            lim = limits[fn.name]
            fn = Dispatcher(fn.name, fn.dense, fn.sparse, {"gemv": lim, "gemm": lim, "conv": lim}, sparsity)
        steps.append(Step(s.node, fn, s.release))
    return Plan(plan.graph, tuple(steps))


def _with_releases(steps: list[tuple[Node, Any]], outputs: Sequence[ValueInfo]) -> tuple[Step, ...]:
    wanted = {o.name for o in outputs}
    last: dict[str, int] = {}
    for i, (node, _) in enumerate(steps):
        for x in node.inputs:
            last[x] = i
    release: list[list[str]] = [[] for _ in steps]
    for name, i in last.items():
        if name not in wanted:
            release[i].append(name)
    return tuple(Step(node, fn, tuple(release[i])) for i, (node, fn) in enumerate(steps))


def _plan_graph(model: onnx.ModelProto, nodes: tuple[Node, ...], inputs: Sequence[ValueInfo],
                outputs: Sequence[ValueInfo]) -> Graph:
    """The plan's graph: its steps as nodes; initializers only where a graph output is one."""
    names = {o.name for o in outputs}
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}
    opsets = {o.domain: int(o.version) for o in model.opset_import}
    return Graph(nodes, consts, tuple(inputs), tuple(outputs), opsets, {}, model.graph.name)
