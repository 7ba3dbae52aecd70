"""``InferenceSession``: onnxruntime's API over the runtime's planner and executor."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import onnx

from edge_runtime import engine
from edge_runtime.annotations import read_annotations
from edge_runtime.errors import EdgeRuntimeError, InvalidArgumentError
from edge_runtime.feeds import ExactFeed, validate_feed as _validate_feed
from edge_runtime.graph import ValueInfo, unbounded_loops
from edge_runtime.engine import ort as ortx
from edge_runtime.engine.ort import EDGE_PROVIDER, ORT_PROVIDER
from edge_runtime.onnx_io import HandedBytes, ModelSource, graph_from_model, graph_io, load_model, ort_type_string
from edge_runtime.options import ORT_DISABLE_ALL, SessionOptions, available_cpus
from edge_runtime.resources import release_freed_memory

if TYPE_CHECKING:  # numba is imported only when the numba engine or a sparse island runs
    from edge_runtime import executor, plan as plan_mod

log = logging.getLogger(__name__)

SPARSITY_MODES = ("auto", "off", "force")
#: Warm-up feeds the engine measures with, at most (each adds runs at session creation; a bundle
#: passes this many of its golden inputs).
MAX_WARMUP_FEEDS = 8


@dataclass(frozen=True)
class NodeArg:
    """A graph input or output as onnxruntime describes it: ``name``, ``shape``, ``type``."""

    name: str
    shape: list[Any] | None
    type: str


@dataclass(frozen=True)
class ModelMetadata:
    """The model's metadata, like ``onnxruntime.ModelMetadata``."""

    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict[str, str] = field(default_factory=dict)


def _node_arg(vi: ValueInfo) -> NodeArg:
    shape = None if vi.shape is None else [d if d is not None else None for d in vi.shape]
    return NodeArg(vi.name, shape, ort_type_string(vi.dtype))


def _resolve_profile(profile: Any) -> Any:
    if profile is None:
        return None
    import device_profiles

    try:
        return device_profiles.load_profile(profile)
    except device_profiles.ProfileError as exc:
        raise InvalidArgumentError(f"profile={profile!r}: {exc}") from exc


class InferenceSession:
    """Run an ONNX model; a drop-in for ``onnxruntime.InferenceSession`` on CPU.

    Args:
        path_or_bytes: a path to an .onnx file (external data next to it), the model's bytes,
            an ``onnx.ModelProto``, or :class:`~edge_runtime.onnx_io.HandedBytes` (bytes the
            session owns and lets go as soon as it can; the bundle tools pass checked bytes so).
        sess_options: :class:`SessionOptions` (threads, optimisation level).
        providers: the dense engine, named like onnxruntime's providers:
            ``["CPUExecutionProvider"]`` (the default when onnxruntime is installed) cuts the model
            into onnxruntime sessions around the layers worth running sparse;
            ``["EdgeRuntimeExecutionProvider"]`` runs everything on edge_runtime's own kernels
            (numpy + numba only). See :mod:`edge_runtime.engine`.
        profile: a device profile name, a path to a profile TOML, or a ``DeviceProfile``; sets the
            thread count (unless ``intra_op_num_threads`` is set) and the dense/sparse crossovers.
        sparsity: ``"auto"`` (per-layer dense/sparse choice by measured input density),
            ``"off"`` (dense kernels only) or ``"force"`` (sparse kernels wherever one exists).
        warmup_feed: an input like the ones the model will see (a feed as for :meth:`run`, e.g. a
            calibration image), or a list of such feeds (several images from the line, the first
            :data:`MAX_WARMUP_FEEDS` used), measured at session creation to decide which layers
            gain from running sparse: layer densities at their median over the feeds, plans
            timed over all of them, so one unusually sparse or dense image does not decide for
            the line. Default: a synthetic N(0, 1) input (the exporter's density annotations take
            precedence). A quantized model runs on the zero-skipping int8 kernels only when they
            were measured faster on warm-up inputs: without one, onnxruntime runs it.

    Raises:
        InvalidModelError, UnsupportedOpError, UnsupportedDTypeError: the model cannot run.
        InvalidArgumentError: a bad option value.

    Example:
        >>> import numpy as np, onnx
        >>> from onnx import helper, TensorProto
        >>> g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
        >>> sess = InferenceSession(helper.make_model(g).SerializeToString())
        >>> sess.run(None, {"x": np.array([[-1.0, 2.0]], np.float32)})[0]
        array([[0., 2.]], dtype=float32)
    """

    def __init__(self, path_or_bytes: ModelSource, sess_options: SessionOptions | None = None,
                 providers: Sequence[Any] | None = None, provider_options: Any = None, *,
                 profile: Any = None, sparsity: str = "auto",
                 warmup_feed: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = None) -> None:
        if sparsity not in SPARSITY_MODES:
            raise InvalidArgumentError(f"sparsity={sparsity!r} is not a valid mode; expected one of "
                                       f"{list(SPARSITY_MODES)}.")
        self._options = sess_options or SessionOptions()
        self._profile = _resolve_profile(profile)
        profile_threads = self._profile.runtime.threads if self._profile is not None else None
        self._threads = self._options.resolved_threads(profile_threads)
        auto_threads = self._options.intra_op_num_threads == 0 and profile_threads is None
        self._thread_choice = "set" if not auto_threads else "all CPUs"
        if self._threads > available_cpus():
            log.info("using %d threads on a machine with %d CPUs", self._threads, available_cpus())
        self._engine = engine.choose(providers)
        kernels = self._options.resolved_sparse_kernels(
            self._profile.runtime.sparse_kernels if self._profile is not None else None)
        if kernels == "numpy" and self._engine == "numba" and self._options.sparse_kernels is None:
            log.info("profile %s asks for numpy islands, which need onnxruntime; the numba engine runs the model",
                     self._profile.name)
        elif kernels == "numpy" and self._engine == "numba":
            raise InvalidArgumentError(
                "SessionOptions.sparse_kernels='numpy' needs the onnxruntime engine, but "
                + ("EdgeRuntimeExecutionProvider (numba-only) was chosen" if providers or os.environ.get(engine.ENV)
                   else "onnxruntime is not installed")
                + "; pip install onnxruntime and pass providers=['CPUExecutionProvider'], or set sparse_kernels='numba'.")
        warm = _warmup_list(warmup_feed)
        first_feed = warm[0] if warm else None  # the numba engine's thread choice and priming run it
        model, raw = load_model(path_or_bytes)
        thread_key = None
        if self._engine != "onnxruntime":
            if auto_threads and self._threads > 1:  # the measured thread count is kept per model and input
                from edge_runtime.engine import plancache

                thread_key = plancache.key(raw if raw is not None else model.SerializeToString(), warm,
                                           ("numba threads", self._threads, sparsity))
            raw = None
        self._meta = _metadata(model)
        doc = read_annotations(model)
        ann = {layer["node"]: layer for layer in doc["layers"]} if doc else {}
        optimize = self._options.graph_optimization_level != ORT_DISABLE_ALL
        self._sparsity = sparsity
        self._annotations = ann
        self._engine_report: Any = None
        self._check: Any = None  # a small measured gain, checked on the first images run (engine.linecheck)
        rejected = None
        if self._engine == "onnxruntime":
            from edge_runtime.engine import hybrid
            from edge_runtime.engine.ort import OnnxRuntimeRejected

            self._inputs, self._outputs = graph_io(model)
            cfg = hybrid.EngineConfig(self._threads, sparsity, ann, optimize,
                                      tuple(_validate_feed(self._inputs, f) for f in warm),
                                      numba_plan=None if kernels == "numpy" else
                                      lambda: self._numba_plan(source, ann, optimize), sparse_kernels=kernels)
            path = str(path_or_bytes) if isinstance(path_or_bytes, (str, os.PathLike)) and raw is not None \
                and os.path.isfile(path_or_bytes) else None
            reread = path_or_bytes.again if isinstance(path_or_bytes, HandedBytes) else None  # checked again
            source = hybrid.ModelSource(model, raw, path, disposable=not isinstance(path_or_bytes, onnx.ModelProto),
                                        reread=reread)
            model = raw = None  # build holds the only references (it drops them for a whole-model session)
            try:
                self._plan, self._engine_report, self._check = hybrid.build(source, cfg, self._inputs,
                                                                            self._outputs)
            except OnnxRuntimeRejected as exc:  # the numba engine's checks name what is wrong
                rejected, self._engine = exc, "numba"
                model = source.model if source.model is not None and not source.shed else load_model(path_or_bytes)[0]
            else:
                self._engine = self._engine_report.engine
            if source.disposable:
                source.model = None  # not held while the plan is primed (numba loads its kernels)
        if self._engine == "numba" and self._engine_report is None:  # chosen, or onnxruntime rejected the model
            from edge_runtime.engine.hybrid import ModelSource as Owned  # no onnxruntime import

            owned = Owned(model, disposable=not isinstance(path_or_bytes, onnx.ModelProto))
            model = None
            self._plan = self._numba_plan(owned, ann, optimize)
            if thread_key is not None:
                self._choose_threads(thread_key, first_feed)
            if rejected is not None:
                log.warning("onnxruntime cannot run this model (%s); edge_runtime's own kernels run it", rejected)
        self._bind_run()
        self._prime(first_feed)
        release_freed_memory()  # what building the plan freed leaves the process (glibc keeps it)

    def _bind_run(self) -> None:
        """What every run reads, computed once: the graph's NodeArgs and output names, the feed's
        fast check, and the whole-model onnxruntime session when one runs everything (``run`` then
        calls it straight away: on a 0.25 ms model, rebuilding these per call cost 3-10%)."""
        self._input_args = [_node_arg(v) for v in self._inputs]
        self._output_args = [_node_arg(v) for v in self._outputs]
        self._output_names = [o.name for o in self._outputs]
        self._exact_feed = ExactFeed(self._inputs)
        self._whole = _one_session(self._plan)

    def _prime(self, feed: Mapping[str, np.ndarray] | None) -> None:
        """Run a plan with edge_runtime kernels once now, so the first image does not load them.

        numba loads a cached kernel on its first call (0.3 s for the sparse MLP, 1.2 s for the
        YOLO-style detector on the numba engine); a line creates its session before images come.
        """
        if self._whole is not None:
            return  # one onnxruntime session: nothing of ours to load
        report = self._engine_report
        if report is not None and report.engine == "onnxruntime" and report.island_kernels in ("compiled", "numpy"):
            return  # islands on kernels compiled ahead of time or numpy: nothing loads on first use either
        from edge_runtime import executor, threads
        from edge_runtime.engine import hybrid

        if feed is None and _unbounded(self._plan):
            return  # a synthetic input might never end the loop: kernels load on the first run
        try:
            feed = _validate_feed(self._inputs, feed) if feed is not None else hybrid.synthetic_feed(self._inputs)
            with threads.scoped(self._threads):
                executor.execute(self._plan, feed, [o.name for o in self._outputs])
        except EdgeRuntimeError as exc:  # e.g. a synthetic input the model refuses: load on first use
            log.debug("no priming run: %s", exc)

    def _numba_plan(self, source: Any, ann: Mapping[str, Any], optimize: bool) -> plan_mod.Plan:
        """The numba engine's plan of ``source`` (a ``hybrid.ModelSource``); a disposable source's
        proto is dropped once its weights are decoded, before the kernels copy them into their
        layouts (the MLP 784-4096-4096-10 held its 80 MB of weights three times at that peak)."""
        from edge_runtime import planner

        graph = graph_from_model(source.model)
        if source.disposable:
            source.model = None
        ctx = planner.PlanContext(threads=self._threads, sparsity=self._sparsity,
                                  crossover=_crossover(self._profile), annotations=ann, optimize=optimize)
        plan = planner.build(graph, ctx)
        self._inputs, self._outputs = graph.inputs, graph.outputs
        return plan

    def _choose_threads(self, key: str, feed: Mapping[str, np.ndarray] | None) -> None:
        """Automatic threads on the numba engine: all CPUs only where they win by
        :data:`edge_runtime.threads.PARALLEL_MIN_SPEEDUP` (parallel regions wait for descheduled
        workers when other processes load the device); the choice is kept like the engine's."""
        from edge_runtime import executor, threads
        from edge_runtime.engine import hybrid, plancache

        n = self._threads
        doc = plancache.load(key)
        if doc is not None and doc.get("threads") in (1, n):
            self._threads, self._thread_choice = int(doc["threads"]), str(doc.get("why", "measured"))
            return
        loops = _unbounded(self._plan) if feed is None else []
        if loops:
            self._threads, self._thread_choice = 1, (f"1 thread: Loop {loops[0]!r} has no trip count, so a synthetic "
                                                     f"input might never end it (pass warmup_feed to measure)")
            return
        feed = _validate_feed(self._inputs, feed) if feed is not None else hybrid.synthetic_feed(self._inputs)
        wanted = [o.name for o in self._outputs]
        run = lambda: executor.execute(self._plan, feed, wanted)  # noqa: E731
        try:
            t_n, t_1 = threads.fastest([run, run], [n, 1], repeats=1)
        except EdgeRuntimeError as exc:  # a synthetic input the model refuses (e.g. a scales input)
            self._threads, self._thread_choice = 1, f"1 thread: the warm-up input could not run ({exc})"
            return
        if t_1 >= threads.PARALLEL_MIN_SPEEDUP * t_n:  # worth a closer look
            t_n, t_1 = threads.fastest([run, run], [n, 1])
        chosen = n if t_1 >= threads.PARALLEL_MIN_SPEEDUP * t_n else 1
        why = f"measured: {n} threads {t_n * 1e3:.3f} ms, 1 thread {t_1 * 1e3:.3f} ms"
        self._threads, self._thread_choice = chosen, why
        plancache.store(key, {"threads": chosen, "why": why})

    # -- onnxruntime's surface -------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        """The graph inputs (initializers excluded) with name, shape and type."""
        return list(self._input_args)  # built once: callers write sess.get_inputs()[0].name per run

    def get_outputs(self) -> list[NodeArg]:
        """The graph outputs with name, shape and type."""
        return list(self._output_args)

    def get_modelmeta(self) -> ModelMetadata:
        """Producer, graph name, version and ``custom_metadata_map`` (incl. sparsity annotations)."""
        return self._meta

    def get_providers(self) -> list[str]:
        """What runs the model, in onnxruntime's terms.

        ``["CPUExecutionProvider"]``: onnxruntime runs the whole model (no layer gains from
        skipping zeros); ``["EdgeRuntimeExecutionProvider", "CPUExecutionProvider"]``: sparse
        islands run on edge_runtime's kernels, the rest in onnxruntime;
        ``["EdgeRuntimeExecutionProvider"]``: the numba-only engine.
        """
        if self._engine == "numba":
            return [EDGE_PROVIDER]
        islands = any(not hasattr(step.fn, "session") for step in self._plan.steps)
        return [EDGE_PROVIDER, ORT_PROVIDER] if islands else [ORT_PROVIDER]

    def get_session_options(self) -> SessionOptions:
        """The options this session was created with."""
        return self._options

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: Any = None) -> list[np.ndarray]:
        """Run the model.

        Args:
            output_names: names of the outputs to return, or ``None`` for all, in graph order.
            input_feed: ``{input name: numpy array}``.

        Returns:
            A list of numpy arrays, one per requested output.

        Raises:
            InvalidInputError: missing/unexpected inputs, or wrong type, dtype, rank or shape.
            InvalidArgumentError: an unknown output name.
            ExecutionError: an operator failed.
        """
        if self._whole is not None:  # the whole model in one onnxruntime session: call it directly
            feed = self._exact_feed.check(input_feed)
            if feed is None:
                feed = _validate_feed(self._inputs, input_feed)
            wanted = self._output_names if output_names is None else self._wanted(output_names)
            return ortx.run(self._whole, wanted, feed)
        return self._run(output_names, input_feed, None)

    # -- edge_runtime additions ------------------------------------------------
    def run_with_stats(self, output_names: Sequence[str] | None,
                       input_feed: Mapping[str, Any]) -> tuple[list[np.ndarray], executor.RunStats]:
        """Like :meth:`run`, also returning per-node statistics (kernel, input density, time)."""
        from edge_runtime import executor

        stats: list[executor.NodeStats] = []
        outputs = self._run(output_names, input_feed, stats)
        return outputs, executor.RunStats(tuple(stats))

    @property
    def threads(self) -> int:
        """Threads this session's kernels use."""
        return self._threads

    @property
    def thread_choice(self) -> str:
        """Why :attr:`threads` is what it is: "set" (options or profile), "all CPUs" (the
        onnxruntime engine's default, like onnxruntime's), or the numba engine's measurement."""
        return self._thread_choice

    @property
    def profile(self) -> Any:
        """The session's device profile, or None."""
        return self._profile

    @property
    def sparsity(self) -> str:
        """The sparsity mode: auto, off or force."""
        return self._sparsity

    @property
    def annotations(self) -> Mapping[str, Mapping[str, Any]]:
        """The exporter's sparsity annotations by ONNX node name (empty if the model has none)."""
        return self._annotations

    @property
    def dense_engine(self) -> str:
        """``"onnxruntime"`` or ``"numba"``: which engine runs the dense layers."""
        return self._engine

    @property
    def engine_report(self) -> Any:
        """How the onnxruntime engine planned the model (islands considered, their measured
        dense/sparse times and crossovers, the cost of cutting), or None on the numba engine."""
        return self._engine_report

    def finish_line_check(self, feeds: Sequence[Mapping[str, Any]]) -> int:
        """Run ``feeds`` in turn (outputs discarded) until the line check has decided; returns the runs.

        For tools that time or deploy a session: ``edge-runtime warmup`` runs a bundle's golden
        inputs through it so the engine cache holds the checked decision, and benchmarks run it
        before timing. A no-op (0) when no check is pending.

        Raises:
            InvalidArgumentError: ``feeds`` is empty while a check is pending.
            InvalidInputError: a feed does not fit the model (as :meth:`run`).
        """
        from edge_runtime.engine import linecheck

        if self._check is None:
            return 0
        feeds = list(feeds)
        if not feeds:
            raise InvalidArgumentError("finish_line_check got no feeds; pass a list of input feeds (dicts of "
                                       "input name -> array, as for run())")
        runs = 0
        while self._check is not None and runs < 4 * linecheck.CALLS + 8:  # + calls other threads race in
            self._run(None, feeds[runs % len(feeds)], None)
            runs += 1
        return runs

    @property
    def line_check_pending(self) -> bool:
        """True while the session still runs its first images alternately on the plan chosen at
        creation and on the whole model in one onnxruntime session, to keep the faster
        (``engine_report.line_check`` says why and how it ended; docs/engine.md)."""
        return self._check is not None

    @property
    def plan(self) -> plan_mod.Plan:
        """The optimised graph and its steps (for profilers and tests)."""
        return self._plan

    def _run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
             stats: list[executor.NodeStats] | None) -> list[np.ndarray]:
        wanted = self._output_names if output_names is None else self._wanted(output_names)
        feed = self._exact_feed.check(input_feed)
        if feed is None:
            feed = _validate_feed(self._inputs, input_feed)
        from edge_runtime import executor, threads

        check = self._check
        if check is None or stats is not None:  # run_with_stats reports the plan chosen at creation
            with threads.scoped(self._threads):
                return executor.execute(self._plan, feed, wanted, stats)
        plan, which, block, counted = check.take()
        whole = _one_session(plan)  # called as run() calls it once it is the session's plan
        with threads.scoped(self._threads):
            t0 = check.clock()
            out = ortx.run(whole, wanted, feed) if whole is not None else executor.execute(plan, feed, wanted)
            seconds = check.clock() - t0
        verdict = check.record(which, block, seconds) if counted else None
        if verdict is not None:
            self._conclude(check, verdict)
        return out

    def _conclude(self, check: Any, verdict: Any) -> None:
        """The line check decided: keep its plan (the other one goes, its weights with it)."""
        from edge_runtime.engine import hybrid

        self._engine_report = hybrid.conclude(check, verdict, self._engine_report)
        self._engine = self._engine_report.engine
        self._plan = verdict.plan
        self._bind_run()  # the whole model: run() calls its onnxruntime session directly again
        self._check = None  # calls already under way finish on the plan they took
        log.info("engine: %s", self._engine_report.line_check)

    def _wanted(self, output_names: Sequence[str] | None) -> list[str]:
        names = self._output_names
        if output_names is None:
            return list(names)
        if isinstance(output_names, str):
            raise InvalidArgumentError(f"output_names must be a list of names or None, got the string "
                                       f"{output_names!r}; write [{output_names!r}].")
        unknown = [n for n in output_names if n not in names]
        if unknown:
            raise InvalidArgumentError(f"unknown output name(s) {unknown}; the model's outputs are {names}.")
        return list(output_names) or list(names)  # [] means every output, as in onnxruntime


def _warmup_list(warmup_feed: Any) -> tuple[Mapping[str, Any], ...]:
    """``warmup_feed`` as a tuple of at most :data:`MAX_WARMUP_FEEDS` feeds (checked against the
    graph later); a one-line error for anything else."""
    if warmup_feed is None:
        return ()
    if isinstance(warmup_feed, Mapping):
        return (warmup_feed,)
    if isinstance(warmup_feed, (list, tuple)) and warmup_feed and all(isinstance(f, Mapping) for f in warmup_feed):
        if len(warmup_feed) > MAX_WARMUP_FEEDS:
            log.info("warmup_feed: measuring with the first %d of %d feeds", MAX_WARMUP_FEEDS, len(warmup_feed))
        return tuple(warmup_feed[:MAX_WARMUP_FEEDS])
    what = f"a {type(warmup_feed).__name__} of {len(warmup_feed)} items" if isinstance(warmup_feed, (list, tuple)) \
        else f"a {type(warmup_feed).__name__}"
    raise InvalidArgumentError(f"warmup_feed is {what}; expected one feed (a dict of input name -> array, as for "
                               f"run()) or a non-empty list of them, e.g. warmup_feed=[{{'input': image1}}, "
                               f"{{'input': image2}}].")


def _one_session(plan: plan_mod.Plan) -> Any:
    """The onnxruntime session of a plan that is the whole model in one session, else None."""
    steps = plan.steps
    return steps[0].fn.session if len(steps) == 1 and hasattr(steps[0].fn, "session") else None


def _unbounded(plan: plan_mod.Plan) -> list[str]:
    """The plan's Loops that only data can end (no synthetic warm-up run for them)."""
    return unbounded_loops(plan.graph)  # graph logic: importing the ops would load numba


def _metadata(m: Any) -> ModelMetadata:
    return ModelMetadata(m.producer_name, m.graph.name, m.domain, m.doc_string, m.graph.doc_string,
                         int(m.model_version), {p.key: p.value for p in m.metadata_props})


def _crossover(profile: Any) -> dict[str, float]:
    if profile is None:
        return {}
    c = profile.runtime.sparse_crossover
    return {"gemv": c.gemv, "gemm": c.gemm, "conv": c.conv}
