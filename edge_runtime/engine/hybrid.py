"""Plan a model for onnxruntime dense segments plus edge_runtime sparse islands.

The decision is measured, not guessed (issue: "never slower than onnxruntime"):

1. Candidates (:mod:`edge_runtime.engine.islands`); none -> the whole model is one
   onnxruntime session, exactly what a user of onnxruntime runs.
2. ``sparsity="force"``: every candidate is an island that always runs sparse.
3. ``sparsity="auto"``: candidates without an exporter annotation are measured in an
   onnxruntime run of the whole model on each warm-up input (their inputs as extra outputs;
   the median over the inputs); only those whose expected density is at most
   :data:`PRICE_MAX_DENSITY` are built. The graph is cut at them and run on each warm-up input
   to record each island's input. Each island is timed dense (its dense path:
   :func:`edge_runtime.engine.islands.dense_path`) and sparse at its expected density
   (annotation, else the median over the warm-up inputs) and at a higher one: islands whose sparse kernel does not
   beat the dense one by :data:`MIN_GAIN` are dropped, and each kept island's per-call crossover
   is where the line through its two sparse times meets the dense time (:func:`_crossover`). Then the cut
   plan itself (segments + islands dispatching per call) is timed against the whole-model
   session on the warm-up inputs (:func:`time_plans`); the islands stay only when the cut plan is faster by
   :data:`MIN_PLAN_GAIN`. When it is not, the islands whose own gain exceeds their share of
   the measured boundary cost are cut alone and timed once more (:func:`_worth_their_cut`);
   otherwise the whole-model session runs. (Then the numba engine is timed against a kept cut
   plan, and the faster runs.)
4. A kept plan whose measured gain is under :data:`LINE_CHECK_BELOW` is checked again on the
   first images the session runs, against the whole-model session kept until then
   (:mod:`edge_runtime.engine.linecheck`); the faster of the two stays.
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from edge_runtime.engine import aot
from edge_runtime.engine import islands as isl
from edge_runtime.engine import linecheck
from edge_runtime.engine import ort as ortx
from edge_runtime.engine import plancache, rewrite
from edge_runtime.engine.gather import GatherKernel
from edge_runtime.engine.partition import types_from_doc, types_to_doc, value_types
from edge_runtime.engine.plans import cut_plan, step_fn, whole_graph, whole_plan, with_limits
from edge_runtime.engine.report import (EngineConfig, EngineReport, IslandDecision, ModelSource, at_density,  # noqa: F401
                                        density, feeds, synthetic_feed, with_outcome)
from edge_runtime.graph import ValueInfo
from edge_runtime.plan import Plan

log = logging.getLogger(__name__)

#: An island is kept only when its sparse kernel takes at most this fraction of the dense time
#: at the expected density (margin for measurement noise on a shared machine).
MIN_GAIN = 0.85
#: The cut plan (islands dispatching on the warm-up input) is kept only when it takes at most this
#: fraction of the whole-model session's time, measured against it directly: the islands' own
#: gains, timed alone, missed the segment boundaries' cost (the thresholded demo CNN: islands
#: gained 0.046 ms alone, yet the cut plan ran 0.34 ms against 0.24 ms whole).
MIN_PLAN_GAIN = 0.95
#: A cut plan (or numba engine) kept at creation with a measured time above this fraction of the
#: whole model's is checked on the first images the line runs (:mod:`edge_runtime.engine.linecheck`),
#: the whole-model session kept until then: on a relufied backbone (56-112 px, 80% zeros, AMD EPYC) the
#: cut plan's creation-time estimate was 3-18% optimistic against its steady state over other
#: images, and plans kept at 5-8% measured gains ran 1-3% slower than onnxruntime
#: (docs/experiments.md). Gains above 15% are left alone (the sparse MLP's 3.8x does not need it,
#: and its whole-model session is 80 MB of weights).
LINE_CHECK_BELOW = 0.85
#: Timed calls per contender when pricing an island (dense vs sparse) at session creation.
REPEATS = 5
#: Plans are timed in rounds of consecutive calls (:func:`time_plans`): rounds, and calls per round
#: with one warm-up input and with several (per input).
PLAN_ROUNDS = 2
PLAN_BLOCK = 3
FEED_BLOCK = 2
#: Candidates whose expected input density is above this are not priced at all (no island is
#: built, nothing compiled): no sparse kernel beat onnxruntime above it on this project's
#: benchmarks (the 3x3 convs of ResNet-18 and U-Net lost at 0.72-0.97, the Conv break-evens
#: against onnxruntime were below 0.45; a 4096x4096 GEMV still won 2x at 0.5; bench_models.json).
PRICE_MAX_DENSITY = {"Conv": 0.45, "Gemm": 0.7, "MatMul": 0.7}
#: A quantized model's numba engine is built and timed only when its int8 layers' inputs are at most
#: this dense on the warm-up input (fraction away from the zero point, averaged over the layers
#: with their multiply-adds as weights). The FATReLU CNN of bench_int8_model.py (0.08) runs faster
#: on it than onnxruntime; the demo's int8 CNN (0.29) slower than onnxruntime's ThresholdedRelu
#: form; the dense int8 models of bench_int8_dense.py (0.94-1.0) 4.5-15x slower.
INT8_MAX_DENSITY = 0.5
#: A cut plan whose islands run compiled kernels (:mod:`edge_runtime.engine.aot`) is kept against the
#: numba engine unless that is faster by more than this fraction: the warm cut plan then never loads
#: numba (55-130 MB and 0.3-0.6 s of each session, docs/benchmarks.md), and on the sparse MLP, where
#: both ran the same GEMV kernels, their times were 1-3% apart either way from run to run.
NUMBA_FREE_MARGIN = 0.05


def build(source: ModelSource | onnx.ModelProto, cfg: EngineConfig, inputs: Sequence[ValueInfo],
          outputs: Sequence[ValueInfo]) -> tuple[Plan, EngineReport]:
    """Plan the model for onnxruntime segments + sparse islands (or the numba engine, if faster).

    A measured decision ("auto" with candidates) is kept in :mod:`edge_runtime.engine.plancache`;
    the next session with the same model, warm-up input, settings and machine builds the kept
    plan without measuring.

    Args:
        source: the model, with its bytes / file when the caller has them (not serialized again).

    Returns:
        The plan (steps: onnxruntime segments and island dispatchers), the report, and the
        :class:`~edge_runtime.engine.linecheck.LineCheck` the session runs its first images
        through when the plan's measured gain was small (else None; :func:`conclude` ends it).

    Raises:
        OnnxRuntimeRejected: onnxruntime cannot load the whole model.
    """
    src = source if isinstance(source, ModelSource) else ModelSource(source)
    rewritten = _rewrite(src)  # no local reference to the proto: _build drops it before the peak
    plan, report, check = _build(src, cfg, inputs, outputs)
    if rewritten:
        report = dataclasses.replace(report, fatrelus_rewritten=rewritten)
    return plan, report, check


def _build(src: ModelSource, cfg: EngineConfig, inputs: Sequence[ValueInfo],
           outputs: Sequence[ValueInfo]) -> tuple[Plan, EngineReport, linecheck.LineCheck | None]:
    model = src.model
    fed = {v.name for v in (*inputs, *outputs)}
    ortx.check_exchanged([(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)
                          if v.name in fed and v.type.HasField("tensor_type")], "the model's inputs and outputs")
    data = src.take()  # serialized once at most: a 45 MB model takes ~40-80 ms
    cands = [] if cfg.sparsity == "off" else isl.candidates(model, cfg.annotations, cfg.sparsity)
    cfg = _island_kernels(cfg, model, cands)
    found = isl.supported(model, cands, cfg.sparse_kernels)
    del cands
    int8 = 0 if cfg.sparsity == "off" or cfg.numba_plan is None else isl.int8_layers(model)
    key = doc = None
    if (found or int8) and cfg.sparsity == "auto":
        kernels = () if cfg.sparse_kernels == "numba" else (f"{cfg.sparse_kernels} kernels", aot.stamp())
        key = plancache.key(data, cfg.warmup_feeds, (cfg.threads, cfg.optimize, cfg.numba_plan is not None, *kernels),
                            path=src.path)
        doc = plancache.load(key)
    report = EngineReport(0) if not (found or int8) else (
        _cached_report(doc) if doc and doc.get("plan") == "whole" else None)
    if report is not None:  # the whole model in one session, nothing else built
        graph = whole_graph(model, inputs, outputs)
        if src.disposable:
            src.model = model = None
        if src.path:
            data = b""  # onnxruntime reads the file itself; our copy goes first
        return whole_plan(data or src.path, graph, cfg), report, None
    if doc is not None:
        cached = _cached_report(doc)
        # a decision not yet checked on a line's images: the whole-model session is its rival again
        rival = whole_plan(data, whole_graph(model, inputs, outputs), cfg) \
            if doc.get("line_check") == "pending" and cached is not None else None
        data = b""  # a kept cut or numba plan needs only the proto: drop the bytes before building it
        if doc.get("plan") == "numba" and cfg.numba_plan is not None and cached is not None:
            model = None  # numba_plan drops a disposable source's proto once its weights are decoded
            return _checked(cfg.numba_plan(), cached, rival, cfg, key)
        model = None  # _from_cache may replace a disposable source's proto with a lighter one
        hit = _from_cache(doc, src, found, cfg, inputs, outputs)
        if hit is not None:
            return _checked(*hit, rival, cfg, key)
        del rival
        model = src.model
        data = model.SerializeToString()  # the entry did not fit this model: measure after all
    box = [data]  # _decide lets the bytes go as early as it can (80 MB on the MLP)
    if not int8:  # _int8_on_numba probes with them and the proto after _decide
        data, model = b"", None  # _decide reads the proto from src and lets it go before the numba engine's plan
    plan, report, rival, types = _decide(box, src, found, cfg, inputs, outputs)
    if int8 and len(plan.steps) == 1:
        plan, report, rival = _int8_on_numba(plan, report, int8, cfg, inputs, outputs, data, model)
    if key is not None:
        plancache.store(key, _cache_doc(plan, report, pending=rival is not None,
                                        types=_types_kept(types, plan, found, src.model)))
    return _checked(plan, report, rival, cfg, key)


def _island_kernels(cfg: EngineConfig, model: onnx.ModelProto, found: Sequence[isl.Candidate]) -> EngineConfig:
    """``cfg`` with the kernels the islands are built with: "compiled" where ``edge-runtime warmup``
    compiled them ahead of time for this CPU (:func:`edge_runtime.engine.aot.load`) and they can
    stand in for what was asked, so a warm session never loads numba:

    - numpy's: always; numba-free islands at the numba kernels' speed, and Conv islands too (those
      :func:`edge_runtime.engine.islands.compiled_conv_takes`), which numpy alone has no kernel for.
    - numba's: when every candidate is a Gemm, or a Conv the compiled kernel takes
      (:func:`edge_runtime.engine.islands.compiled_conv_takes`) in a one-thread session: a Gemm island's
      numba kernel is the same kernel on the same untiled (K, N) matrix, a Conv island's the same
      conv kernel on the same layout (a MatMul island's numba layout is tiled for many rows). The compiled
      kernels run on one thread: numba's split a Gemm island only above
      ``sparse_matmul.PARALLEL_MIN_FLOPS`` (8e6) effective FLOPs a call (a 4096x4096 GEMV above input
      density 0.24), and the numba engine, which has those kernels, is still timed against the cut
      plan (:func:`_against_numba`); a Conv island of a small CNN is past that line at density 0.1
      (a 3x3 128 -> 128 conv at 28x28: 23e6), so with more threads Convs keep numba's kernels.
    """
    def compiled_stands_in(anchor: onnx.NodeProto) -> bool:
        return anchor.op_type == "Gemm" or cfg.threads == 1 and isl.compiled_conv_takes(model, anchor)

    if not found or cfg.sparse_kernels == "numba" and not all(
            compiled_stands_in(model.graph.node[c.nodes[0]]) for c in found):
        return cfg
    if aot.load() is None:
        return cfg
    return dataclasses.replace(cfg, sparse_kernels="compiled")


def _checked(plan: Plan, report: EngineReport, rival: Plan | None, cfg: EngineConfig,
             key: str | None) -> tuple[Plan, EngineReport, linecheck.LineCheck | None]:
    """``plan`` with its line check against ``rival`` (the whole-model session), when there is one."""
    if report.engine == "onnxruntime" and len(plan.steps) > 1 and not report.island_kernels:
        report = dataclasses.replace(report, island_kernels=cfg.sparse_kernels)
    if rival is None:
        return plan, report, None
    check = linecheck.LineCheck(plan, rival, cfg.threads, key=key)
    return plan, dataclasses.replace(report, line_check=f"pending: the first {2 * check.calls} images run "
                                                        "alternate with the whole model"), check


def conclude(check: linecheck.LineCheck, verdict: linecheck.Verdict, report: EngineReport) -> EngineReport:
    """The report after ``check`` decided (and the engine cache's entry: the next session of the model
    builds the winner without checking)."""
    kept_whole = not verdict.candidate_kept
    line = verdict.sentence("numba engine" if report.engine == "numba" else "cut plan")

    def concluded(outcome: str) -> EngineReport:
        return dataclasses.replace(report, line_check=line, engine="onnxruntime" if kept_whole else report.engine,
                                   outcome=f"{'whole model: ' if kept_whole else ''}{outcome}; {line}")
    if check.key is not None:
        stored = concluded(report.outcome.removesuffix(_CACHED_WORDS))
        before = plancache.load(check.key) or {}
        plancache.store(check.key, _cache_doc(verdict.plan, dataclasses.replace(stored, cached=False),
                                              types=before.get("types")))
    return concluded(report.outcome)


def _rewrite(src: ModelSource) -> int:
    """Run ``src.model``'s FATReLUs as ThresholdedRelu (:mod:`edge_runtime.engine.rewrite`); returns
    how many. The caller's own proto is copied first, and the bytes / file no longer describe it."""
    sites = rewrite.fatrelu_sites(src.model)
    if not sites:
        return 0  # nothing copied: a caller's proto is copied only when something is rewritten
    target = src.model if src.disposable else onnx.ModelProto()
    if target is not src.model:
        target.CopyFrom(src.model)
    count = rewrite.fatrelu_to_thresholded_relu(target, sites)
    log.debug("%d FATReLU (GreaterOrEqual + Where) run as ThresholdedRelu", count)
    src.model, src.data, src.path = target, None, None
    return count


def _decide(box: list[bytes], src: ModelSource, found: list[isl.Candidate], cfg: EngineConfig,
            inputs: Sequence[ValueInfo], outputs: Sequence[ValueInfo]
            ) -> tuple[Plan, EngineReport, Plan | None, dict[str, onnx.TypeProto]]:
    """The plan, its report, the whole-model plan when the kept plan's gain calls for a line check, and
    the tensors' types (from shape inference; empty when no island was tried).

    Where the caller keeps no other reference, memory goes as soon as nothing needs it:
    ``box`` holds the serialized model, emptied before the density probe copies the bytes when
    the whole-model session can be built without them (onnxruntime reads the model's file, or a
    bundle's model is read and checked again: ``ModelSource.whole``), else once that session holds
    the model; ``src.model`` is not held here while the numba engine's plan is built (which drops
    a disposable proto once its weights are decoded)."""
    model = src.model
    if cfg.sparsity == "auto":
        cands = _likely_sparse(box if src.path or src.reread else box[0], model, found, cfg, inputs)
    else:
        cands = found
    whole = whole_plan(box.pop() if box else src.whole(), whole_graph(model, inputs, outputs), cfg)
    if not found:
        return whole, EngineReport(0), None, {}
    types = value_types(model) if cands else {}
    cands = [c for c in cands if isl.float_input(c, types)]
    prepared = [p for p in (isl.prepare(model, c, types, cfg.threads, cfg.sparse_kernels) for c in cands) if p is not None]
    if not prepared:
        limits = ", ".join(f"{op} {d}" for op, d in PRICE_MAX_DENSITY.items())
        return whole, EngineReport(len(found), outcome="whole model in one onnxruntime session: no candidate "
                                   f"layer's input was sparse enough to try (density at most {limits})"), None, types
    # numpy islands' weights leave the proto before any cut is built (as in a warm session)
    model = None  # src holds the proto alone while _shed lets it go
    model, shed = _shed(src, prepared, used=True)
    if cfg.sparsity == "force":
        plan = cut_plan(model, prepared, types, cfg, inputs, outputs, limits=None)
        return plan or whole, EngineReport(len(found), outcome=f"{len(prepared)} islands forced sparse"), None, types
    plan, report = _measured(model, prepared, types, cfg, inputs, outputs, whole, len(found), shed)
    if plan is whole:
        return plan, report, None, types
    # kept for the line check on a small gain; on a clear win the whole-model session (every weight
    # again) goes before the numba plan is built
    rival = whole if _small_gain(report.cut_ms, report.whole_ms) else None
    del whole, prepared  # the proto too: the numba plan decodes its weights and drops it
    if shed and cfg.numba_plan is not None:  # compiled islands: the numba engine's plan needs every weight
        _restore_outside(model, shed, ())
        src.shed = False
    del model
    return (*_against_numba(plan, report, cfg, inputs, outputs), rival, types)


def _small_gain(kept: float, whole: float) -> bool:
    """Whether a plan kept at ``kept`` (s or ms) against the whole model's ``whole`` is checked on the line."""
    return kept > LINE_CHECK_BELOW * whole


def _against_numba(plan: Plan, report: EngineReport, cfg: EngineConfig, inputs: Sequence[ValueInfo],
                   outputs: Sequence[ValueInfo]) -> tuple[Plan, EngineReport]:
    """With sparse islands kept, time the numba engine on the whole model too; keep the faster.

    Small models lose most to the cuts (each costs onnxruntime its blocked layout), where
    edge_runtime's kernels running everything can win outright.
    """
    from edge_runtime.errors import EdgeRuntimeError

    if cfg.numba_plan is None or len(plan.steps) == 1:
        return plan, report
    try:
        numba_plan = cfg.numba_plan()
    except EdgeRuntimeError as exc:  # an op only onnxruntime has: keep the cut plan
        log.debug("numba engine not considered: %s", exc)
        return plan, report
    cut_s, numba_s = time_plans([plan, numba_plan], feeds(cfg, inputs), [o.name for o in outputs], cfg.threads)
    # a cut plan on compiled islands never loads numba in a warm session: the numba engine must win clearly
    won = numba_s < cut_s * (1 - NUMBA_FREE_MARGIN if cfg.sparse_kernels == "compiled" else 1)
    report = with_outcome(report, f"{report.outcome}; numba engine {numba_s * 1e3:.3f} ms vs {cut_s * 1e3:.3f} ms "
                                  f"cut: {'numba' if won else 'cut'} kept")
    return (numba_plan, dataclasses.replace(report, engine="numba")) if won else (plan, report)


def _int8_on_numba(whole: Plan, report: EngineReport, int8: int, cfg: EngineConfig, inputs: Sequence[ValueInfo],
                   outputs: Sequence[ValueInfo], data: bytes,
                   model: onnx.ModelProto) -> tuple[Plan, EngineReport, Plan | None]:
    """A quantized model: the numba engine skips the zero-point inputs of its int8 layers, which
    onnxruntime's int8 kernels multiply; it runs the model when it is faster on the warm-up input
    ("force": always).

    Without a warm-up input onnxruntime keeps the model: both engines' int8 times depend on the
    data, so a synthetic input decides wrongly. On the demo's int8 CNN (exported Where form, before
    the int8 FATReLU rewrite) onnxruntime took 0.15 ms on zeros, 0.31 ms on a real image and
    0.45 ms on N(0, 1) noise (its QLinearWhere branches per element), which made the numba engine
    (0.40 ms on real images) look 25% faster when it was 7% slower. A numba engine kept by less
    than :data:`LINE_CHECK_BELOW` is checked on the line's first images against ``whole``.

    Nor is it built when the int8 layers' inputs on the warm-up input are at their zero point too
    rarely to gain (density weighted by multiply-adds above :data:`INT8_MAX_DENSITY`, one
    onnxruntime run): a dense int8 model then costs about what onnxruntime's session costs to
    create (the MobileNetV3-style int8 model of bench_int8_dense.py took 1.9 s to create with the
    numba engine built and timed, 62 ms a run against onnxruntime's 4 ms).
    """
    from edge_runtime.errors import EdgeRuntimeError

    what = f"{int8} int8 layers with zero-skipping kernels"
    if cfg.sparsity != "force" and not cfg.warmup_feeds:  # nothing built: the times depend on the data
        return whole, with_outcome(report, f"{report.outcome}; the numba engine ({what}) was not timed: no "
                                           f"warm-up input (pass warmup_feed=, e.g. a calibration image; a "
                                           f"bundle passes its golden inputs)"), None
    mean = _mean_int8_density(data, model, cfg, inputs) if cfg.sparsity != "force" else None
    if mean is not None and mean > INT8_MAX_DENSITY:
        return whole, with_outcome(report, f"{report.outcome}; the numba engine ({what}) was not timed: its int8 "
                                           f"layers' inputs are too dense on the {_warmup_words(len(cfg.warmup_feeds))} "
                                           f"(density {mean:.2f} weighted by multiply-adds, above "
                                           f"{INT8_MAX_DENSITY})"), None
    try:
        numba_plan = cfg.numba_plan()
    except EdgeRuntimeError as exc:
        log.debug("numba engine not considered: %s", exc)
        return whole, with_outcome(report, f"{report.outcome}; the numba engine cannot run it ({exc})"), None
    if cfg.sparsity == "force":
        forced = with_outcome(report, f"numba engine forced: {what}")
        return numba_plan, dataclasses.replace(forced, engine="numba"), None
    whole_s, numba_s = time_plans([whole, numba_plan], cfg.warmup_feeds, [o.name for o in outputs], cfg.threads)
    won = numba_s <= MIN_PLAN_GAIN * whole_s
    report = dataclasses.replace(report, whole_ms=whole_s * 1e3)
    report = with_outcome(report, f"{report.outcome}; numba engine ({what}) {numba_s * 1e3:.3f} ms vs "
                                  f"{whole_s * 1e3:.3f} ms whole: {'numba' if won else 'whole'} kept")
    if not won:
        return whole, report, None
    rival = whole if _small_gain(numba_s, whole_s) else None
    return numba_plan, dataclasses.replace(report, engine="numba"), rival


def _warmup_words(n: int) -> str:
    """What a median over ``n`` warm-up inputs is called in reports."""
    return "warm-up input" if n <= 1 else f"median of {n} warm-up inputs"


def _mean_int8_density(data: bytes, model: onnx.ModelProto, cfg: EngineConfig,
                       inputs: Sequence[ValueInfo]) -> float | None:
    """The int8 layers' input density (fraction of each quantized input away from its zero point) on
    the warm-up inputs, averaged with each layer's multiply-adds as weight (where the time goes),
    the median over the inputs; None when there is nothing to probe or the probe failed."""
    acts = isl.int8_inputs(model)

    def weighted(values: list[np.ndarray]) -> float:
        macs = np.array([a.macs_per_value * v.size for a, v in zip(acts, values)])
        dens = np.array([np.count_nonzero(v != a.zero_point) / max(v.size, 1) for a, v in zip(acts, values)])
        return float(dens @ macs / macs.sum()) if macs.sum() > 0 else float(dens.mean())

    means = _probe(data, model, {a.name: a.elem_type for a in acts}, cfg, inputs, weighted) if acts else None
    return None if means is None else statistics.median(means)


def _cache_doc(plan: Plan, report: EngineReport, pending: bool = False,
               types: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The engine cache's entry; ``pending``: the decision is still to be checked on a line's images;
    ``types``: a cut plan's tensor types (:func:`_types_kept`), so that a warm session builds it
    without ONNX shape inference."""
    kind = "numba" if report.engine == "numba" else ("cut" if len(plan.steps) > 1 else "whole")
    doc = {"plan": kind, "limits": {d.name: d.crossover for d in report.islands if d.kept},
           "line_check": "pending" if pending else "done", "report": dataclasses.asdict(report)}
    if kind == "cut" and types:
        doc["types"] = dict(types)
    return doc


def _types_kept(types: Mapping[str, onnx.TypeProto], plan: Plan, found: Sequence[isl.Candidate],
                model: onnx.ModelProto | None) -> dict[str, Any]:
    """What a warm session needs of ``types`` to build the cut ``plan`` again, as JSON
    (:func:`edge_runtime.engine.partition.types_to_doc`): the tensors its steps exchange and every
    output along its islands' candidate chains (an island tries its chain's prefixes).

    ONNX shape inference is the warm session's largest cost otherwise: its first call builds onnx's
    operator schema registry, 15 ms and 7 MB (the 64-128-256 CNN's whole warm session took 96 ms and
    111 MB against onnxruntime's 36 ms and 75 MB)."""
    if len(plan.steps) < 2 or not types:
        return {}
    names = {x for step in plan.steps for x in (*step.node.inputs, *step.node.outputs)}
    steps = {step.node.name for step in plan.steps}
    if model is not None:
        names.update(o for c in found if c.name in steps for i in c.nodes for o in model.graph.node[i].output)
    return types_to_doc(types, names)


def _cached_report(doc: Mapping[str, Any]) -> EngineReport | None:
    try:
        fields = dict(doc["report"])
        fields["islands"] = tuple(IslandDecision(**d) for d in fields["islands"])
        report = dataclasses.replace(EngineReport(**fields), cached=True)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return with_outcome(report, f"{report.outcome}{_CACHED_WORDS}")


_CACHED_WORDS = " (measured earlier on this machine; engine cache)"


def _from_cache(doc: Mapping[str, Any], src: ModelSource, found: list[isl.Candidate],
                cfg: EngineConfig, inputs: Sequence[ValueInfo],
                outputs: Sequence[ValueInfo]) -> tuple[Plan, EngineReport] | None:
    """The kept decision's plan and report, or None when the entry does not fit this model.

    A proto the session owns loses the weights its islands hold before their layout is made and
    the segments are built (:func:`edge_runtime.engine.islands.shed_weights`): the proto, the
    decoded weight, its kernel layout and the segments' onnxruntime sessions at once were the warm
    session's peak (MLP 784-4096-4096-10: numpy islands 277 MB, 228 MB shed and laid out in this
    order; numba islands 348 MB, decoded before the proto went; onnxruntime alone 195 MB). Numpy
    islands' weights are put back if the entry does not fit; numba islands' are decoded first
    (:func:`_predecode`) and the model is loaded again then."""
    model = src.model
    report = _cached_report(doc)
    try:
        kind, limits = doc["plan"], {str(k): float(v) for k, v in doc["limits"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if report is None:
        return None
    if kind != "cut":  # a kept numba plan is built by build(), after the proto is let go
        return None
    types = types_from_doc(doc.get("types")) or value_types(model)
    kept = [c for c in found if c.name in limits and isl.float_input(c, types)]
    model = None  # src holds the proto alone while _predecode and _shed let it go
    model, decoded = _predecode(src, kept) if cfg.sparse_kernels == "numba" else (src.model, {})
    predecoded = src.shed
    prepared = []
    for c in kept:
        p = isl.prepare(model, c, types, cfg.threads, cfg.sparse_kernels, decoded)
        decoded.pop(_anchor_weight(model, c), None)  # the kernel holds its layout: the decoded copy goes
        if p is not None:
            prepared.append(p)
    if {p.candidate.name for p in prepared} != set(limits):
        _reload(src)
        return None
    model = None
    model, shed = _shed(src, prepared, used=False)
    plan = cut_plan(model, prepared, types, cfg, inputs, outputs, limits)
    if plan is None:
        _restore_outside(model, shed, ())  # numpy islands' weights, bit for bit
        src.shed = predecoded
        _reload(src)  # numba islands' weights
        return None
    return plan, report


def _anchor_weight(model: onnx.ModelProto, cand: isl.Candidate) -> str:
    """The name of the weight the candidate's Gemm / MatMul / Conv multiplies by ("" if none)."""
    anchor = model.graph.node[cand.nodes[0]]
    return anchor.input[1] if len(anchor.input) > 1 else ""


def _predecode(src: ModelSource, cands: Sequence[isl.Candidate]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """numba islands in a warm session: decode the Gemm / MatMul islands' weights first, then let the
    proto lose them (:func:`edge_runtime.engine.islands.shed_weights`), so that the proto, a decoded
    weight and its kernel layout are never held at once. Only for a proto the session owns and can
    load again (:func:`_reload`: a build that fails after this needs the model whole).

    Returns the proto to build from and the decoded weights it lost, by name."""
    from edge_runtime.onnx_io import decode_initializer

    if not (src.disposable and (src.path or src.reread)):
        return src.model, {}
    graph = src.model.graph
    inits = {t.name: t for t in graph.initializer}
    names = {_anchor_weight(src.model, c) for c in cands
             if graph.node[c.nodes[0]].op_type in isl.NUMPY_ANCHORS} & set(inits)
    decoded = {name: decode_initializer(inits[name]) for name in names}
    del graph, inits  # references into the proto
    model, shed = isl.shed_weights(src.model, decoded)
    src.model, src.shed = model, bool(shed)  # the original proto goes now
    return model, {name: decoded[name] for name in shed}


def _reload(src: ModelSource) -> None:
    """Load ``src.model`` again where weights were shed from it (a warm build that did not fit: the
    session measures after all, on the whole model)."""
    if src.shed:
        from edge_runtime.onnx_io import load_model_proto

        src.model, src.shed = load_model_proto(src.whole()), False


def _shed(src: ModelSource, prepared: Sequence[isl.PreparedIsland],
          used: bool) -> tuple[onnx.ModelProto, dict[str, GatherKernel]]:
    """Move the weights that numpy islands hold out of ``src.model`` when the session owns it
    (:func:`edge_runtime.engine.islands.shed_weights`; ``src.model`` becomes the light copy and the
    original goes, where the caller holds no other reference) and lay them out, before any
    segment's onnxruntime session is built.

    Returns the proto to build from and the kernels whose weights it lost, by weight name. With
    ``used`` (islands that will run before a cut without them is built) only kernels whose
    weight can be put back bit for bit after use (:func:`_restore_outside`) are shed."""
    held = {p.kernel.weight_name: p.kernel for p in prepared
            if isinstance(p.kernel, GatherKernel) and (p.kernel.exact_after_use or not used)}
    if not (src.disposable and held):
        return src.model, {}
    model, names = isl.shed_weights(src.model, held)
    src.model, src.shed = model, bool(names)  # the original proto goes now, with the weights the kernels hold
    for name in names:  # laid out before the segments' sessions exist (the decoded copy goes)
        held[name].lay_out()
    return model, {name: held[name] for name in names}


def _restore_outside(model: onnx.ModelProto, shed: dict[str, GatherKernel],
                     islands: Sequence[isl.PreparedIsland]) -> None:
    """Put back into ``model`` the shed weights of the islands not among ``islands`` (their nodes go
    to an onnxruntime segment now), bit for bit; ``shed`` forgets them."""
    inside = {p.kernel.weight_name for p in islands if isinstance(p.kernel, GatherKernel)}
    back = [name for name in shed if name not in inside]
    isl.restore_weights(model, {name: shed.pop(name).source_weight() for name in back})


def _likely_sparse(data: bytes | list[bytes], model: onnx.ModelProto, cands: list[isl.Candidate], cfg: EngineConfig,
                   inputs: Sequence[ValueInfo]) -> list[isl.Candidate]:
    """The candidates whose expected density is at most :data:`PRICE_MAX_DENSITY` for their op.

    Annotated layers use their annotation; the others are measured in onnxruntime runs of the
    whole model on the warm-up inputs with their inputs as extra outputs, at the median over the
    inputs (cheap next to building and pricing islands, which compiles kernels and creates a
    session per segment).
    """
    unknown = _unique_inputs(c for c in cands if c.annotated_density is None)
    measured = _probe_densities(data, model, unknown, cfg, inputs) if unknown else {}
    if measured is None:  # the probe could not run: price every candidate
        return cands
    expected = [c.annotated_density if c.annotated_density is not None else measured[c.input] for c in cands]
    ops = [model.graph.node[c.nodes[0]].op_type for c in cands]
    return [c for c, d, op in zip(cands, expected, ops) if d <= PRICE_MAX_DENSITY[op]]


def _unique_inputs(cands: Any) -> list[str]:
    return list(dict.fromkeys(c.input for c in cands))


def _probe_densities(data: bytes | list[bytes], model: onnx.ModelProto, names: list[str], cfg: EngineConfig,
                     inputs: Sequence[ValueInfo]) -> dict[str, float] | None:
    runs = _probe(data, model, {n: onnx.TensorProto.FLOAT for n in names}, cfg, inputs,
                  lambda values: [density(v) for v in values])
    return None if runs is None else {n: statistics.median(d[i] for d in runs) for i, n in enumerate(names)}


def _probe(data: bytes | list[bytes], model: onnx.ModelProto, wanted: Mapping[str, int], cfg: EngineConfig,
           inputs: Sequence[ValueInfo], reduce: Callable[[list[np.ndarray]], Any] = lambda values: values,
           ) -> list[Any] | None:
    """``reduce`` of the values of the tensors ``wanted`` (name -> element type) in an onnxruntime
    run of the whole model, one per warm-up input (reduced before the next run: the values of
    every input at once would be a memory peak), or None when a run fails.

    ``data``: the serialized model, or a list holding it that is emptied once the probe's copy is
    made (the caller's only reference: the bytes then go before onnxruntime parses the copy)."""
    graph_outputs = {o.name for o in model.graph.output}
    extra = onnx.ModelProto()
    extra.graph.output.extend(onnx.helper.make_tensor_value_info(n, elem, None)
                              for n, elem in wanted.items() if n not in graph_outputs)
    # Serialized protobuf messages merge when concatenated (repeated fields append): the model's
    # bytes followed by a model holding only the extra outputs is the model with those outputs.
    data = (data.pop() if isinstance(data, list) else data) + extra.SerializeToString()
    try:
        session = ortx.make_session(data, cfg.threads, cfg.optimize)
        return [reduce(session.run(list(wanted), dict(feed))) for feed in feeds(cfg, inputs)]
    except Exception as exc:  # noqa: BLE001 - a failed probe only means everything is priced
        log.debug("density probe failed (%s): pricing everything", exc)
        return None


def _measured(model: onnx.ModelProto, prepared: list[isl.PreparedIsland], types: Mapping[str, Any],
              cfg: EngineConfig, inputs: Sequence[ValueInfo], outputs: Sequence[ValueInfo],
              whole: Plan, n_cands: int, shed: dict[str, GatherKernel]) -> tuple[Plan, EngineReport]:
    """The measured plan: islands priced one by one, then the cut plan of those that beat their
    dense path (or of the strongest) timed against the whole model. ``shed``: the islands whose
    weights ``model`` lost (:func:`_shed`), put back before a cut runs their nodes in a segment."""
    from edge_runtime.executor import execute

    runs = feeds(cfg, inputs)
    seen: dict[str, np.ndarray] = {}
    probe = cut_plan(model, prepared, types, cfg, inputs, outputs, limits=None, record=seen)
    if probe is None:
        return whole, EngineReport(n_cands, outcome="whole model: a cut tensor has no known type")
    wanted = [o.name for o in outputs]
    first: dict[str, np.ndarray] = {}
    seen_density: dict[str, list[float]] = {p.candidate.name: [] for p in prepared}
    for feed in runs:  # each island's input on every warm-up input; the first input's arrays are kept
        execute(probe, feed, wanted)
        for name, values in seen_density.items():
            values.append(density(seen[name]))
        if not first:  # copied when more runs follow: they may reuse the buffers
            first = {name: np.array(x, copy=True) for name, x in seen.items()} if len(runs) > 1 else dict(seen)
    seen.clear()
    decisions = [_price(p, first[p.candidate.name], step_fn(probe, p.candidate.name).dense, cfg.threads,
                        seen_density[p.candidate.name]) for p in prepared]
    del first
    kept = [p for p, d in zip(prepared, decisions) if d.kept]
    if not kept:
        return whole, EngineReport(n_cands, tuple(decisions), outcome="whole model: no island beat onnxruntime")

    def timed(islands: list[isl.PreparedIsland], built: Plan | None) -> tuple[Plan | None, float, float]:
        """The cut plan of ``islands`` (``built`` if given) with their crossovers, and (whole, cut) seconds."""
        names = {p.candidate.name for p in islands}
        limits = {d.name: d.crossover for d in decisions if d.name in names}
        if built is None:
            _restore_outside(model, shed, islands)
        plan = built if built is not None else cut_plan(model, islands, types, cfg, inputs, outputs, limits)
        if plan is None:
            return None, 0.0, 0.0
        plan = with_limits(plan, limits, cfg.sparsity)
        whole_s, cut_s = time_plans([whole, plan], runs, wanted, cfg.threads)
        return plan, whole_s, cut_s

    plan, whole_s, cut_s = timed(kept, probe if len(kept) == len(prepared) else None)
    del probe  # its segment sessions (the weights again) go before another cut is built
    if plan is None:
        return whole, EngineReport(n_cands, tuple(decisions), outcome="whole model: a cut tensor has no known type")
    gain_s = sum((d.dense_ms - d.sparse_ms) / 1e3 for d in decisions if d.kept)
    report = EngineReport(n_cands, tuple(decisions), whole_s * 1e3, cut_s * 1e3)
    if cut_s <= MIN_PLAN_GAIN * whole_s:
        return plan, with_outcome(report, _islands_outcome(len(kept), plan, cut_s, whole_s))
    lost = (f"the cut plan took {cut_s * 1e3:.3f} ms against {whole_s * 1e3:.3f} ms whole (its islands alone gain "
            f"{gain_s * 1e3:.3f} ms; segment boundaries cost the rest)")
    del plan
    strong = _worth_their_cut(decisions, cut_s - (whole_s - gain_s))
    if not strong:
        return whole, with_outcome(report, f"whole model: {lost}")
    sub, whole_s, sub_s = timed([p for p in kept if p.candidate.name in strong], None)
    if sub is not None and sub_s <= MIN_PLAN_GAIN * whole_s:
        decisions = [d if d.name in strong else dataclasses.replace(d, kept=False) for d in decisions]
        report = EngineReport(n_cands, tuple(decisions), whole_s * 1e3, sub_s * 1e3)
        return sub, with_outcome(report, f"{_islands_outcome(len(strong), sub, sub_s, whole_s)} (with all "
                                         f"{len(kept)} islands that beat their dense path, {lost})")
    if sub is not None:
        lost += f"; its {len(strong)} strongest islands alone took {sub_s * 1e3:.3f} ms"
    return whole, with_outcome(report, f"whole model: {lost}")


def _islands_outcome(n: int, plan: Plan, cut_s: float, whole_s: float) -> str:
    return (f"{n} sparse islands in {_segments(plan)} onnxruntime segments: {cut_s * 1e3:.3f} ms against "
            f"{whole_s * 1e3:.3f} ms whole")


def _worth_their_cut(decisions: Sequence[IslandDecision], boundaries_s: float) -> set[str]:
    """The kept islands whose own gain exceeds their share of the measured boundary cost, when
    that is a strict, non-empty subset of them (else empty: nothing different to try).

    The cut plan with every island that beat its dense path can lose as a whole while a few
    large islands would win: at 224 px on the Intel host a relufied YOLO-style backbone's three
    deep 3x3 convs gained 0.9-1.7 ms each, its four other islands 0.07-0.22 ms, and the cut plan
    with all seven lost by 0.28 ms: 4.39 ms of boundaries, 0.63 ms per island
    (experiments_relufy_latency_probe.json). The boundary cost per island is the whole plan's
    measured excess (cut time - whole time + the islands' gains) over the islands.
    """
    kept = [d for d in decisions if d.kept]
    share = max(boundaries_s, 0.0) / max(len(kept), 1)
    strong = {d.name for d in kept if (d.dense_ms - d.sparse_ms) / 1e3 > share}
    return strong if 0 < len(strong) < len(kept) else set()


def time_plans(plans: Sequence[Plan], runs: Sequence[Mapping[str, np.ndarray]], wanted: list[str],
               threads: int) -> list[float]:
    """Seconds per run of each plan, the mean over the feeds ``runs`` of each feed's fastest call:
    per feed, :data:`PLAN_ROUNDS` rounds in which each plan runs :data:`PLAN_BLOCK` consecutive
    calls (:data:`FEED_BLOCK` per feed with several feeds).

    Consecutive calls, not single calls alternating between the plans: a line runs one model
    back to back, and a call that follows the other plan's starts with that plan's weights in
    the caches. On a relufied backbone at 56 px (1 thread, AMD EPYC) onnxruntime's whole model
    took 1.22-1.23 ms run alone and 1.30-1.49 ms alternating call by call with the cut plan, and
    alternating timings at session creation read it at 1.36-1.66 ms: a 5-10% gain of the cut plan
    drowned in it (experiments_relufy_latency_probe_warmup8_epyc.json). The fastest per feed,
    not of passes over all feeds: another process's time slice spoils one image's sample, not a
    pass."""
    from edge_runtime import threads as pools
    from edge_runtime.executor import execute

    def run(plan: Plan, feed: Mapping[str, np.ndarray]) -> None:
        with pools.scoped(threads):
            execute(plan, feed, wanted)

    block = PLAN_BLOCK if len(runs) == 1 else FEED_BLOCK
    totals = [0.0] * len(plans)
    for i, feed in enumerate(runs):  # the first feed's first calls compile and allocate: untimed
        times = _interleaved([lambda p=p, f=feed: run(p, f) for p in plans], threads, PLAN_ROUNDS,
                             warm_up=i == 0, block=block)
        totals = [t + s for t, s in zip(totals, times)]
    return [t / len(runs) for t in totals]


def _segments(plan: Plan) -> int:
    return sum(isinstance(s.fn, ortx.SegmentStep) for s in plan.steps)


def _price(p: isl.PreparedIsland, x: np.ndarray, dense: Callable[[np.ndarray], Any], threads: int,
           measured: Sequence[float]) -> IslandDecision:
    """Time the island dense, and sparse at its expected density and at a higher one; its crossover
    is where the sparse time, a line through those two points, reaches 0.9x the dense time.

    ``x`` is the island's input on the first warm-up input, ``measured`` its density on each; the
    expected density is the annotation, else the median of ``measured`` (``x`` is brought to it).
    One warm-up image decides badly where images differ: on a relufied backbone at 56 px the
    islands' input density ranged 0.09-0.44 over 16 test images (experiments_relufy_latency_probe)."""
    ann = p.candidate.annotated_density
    d0 = statistics.median(measured) if ann is None else float(ann)
    x0 = at_density(x, d0)
    d_real = density(x0)
    x1 = at_density(x, min(1.0, max(3.0 * d_real, d_real + 0.2)))
    d_high = density(x1)
    t_dense, t_sparse, t_high = _interleaved([lambda: dense(x0), lambda: p.kernel(x0, d_real),
                                              lambda: p.kernel(x1, d_high)], threads)
    kept = t_sparse <= MIN_GAIN * t_dense
    crossover = _crossover(d_real, t_sparse, d_high, t_high, t_dense) if kept else 0.0
    source = "annotation" if ann is not None else _warmup_words(len(measured))
    return IslandDecision(p.candidate.name, d_real, source,
                          t_dense * 1e3, t_sparse * 1e3, crossover, kept)


def _crossover(d0: float, t0: float, d1: float, t1: float, t_dense: float) -> float:
    """The density at which the sparse kernel, timed ``t0`` at density ``d0`` and ``t1`` at ``d1``,
    takes 0.9x the dense time ``t_dense``: on the line through the two points (a fixed cost plus a
    cost per non-zero), capped at 1.

    A line through the origin from one point (the rule before) puts the fixed cost on the
    non-zeros and the crossover too low when the warm-up input is sparser than most: on a
    relufied YOLO-style backbone at 56 px (warm-up density 0.03) islands fell back to their dense
    path on images at density 0.1 where their kernels still ran 2.5x faster than dense
    (experiments_relufy_latency_probe_epyc.json). Where the second time is not larger (noise, or
    a kernel whose time does not grow), the crossover is the higher measured density if the
    kernel beat dense there, else the line through the origin."""
    limit = 0.9 * t_dense
    if d1 > d0 and t1 > t0:
        slope = (t1 - t0) / (d1 - d0)
        return float(min(1.0, max((limit - (t0 - slope * d0)) / slope, 0.0)))
    if t1 <= limit:
        return float(min(1.0, d1))
    return float(min(1.0, max(d0, 1e-3) * limit / max(t0, 1e-9)))


def _interleaved(fns: Sequence[Callable[[], Any]], threads: int, repeats: int = REPEATS,
                 warm_up: bool = True, block: int = 1) -> list[float]:
    """The fastest call of each function over ``repeats`` interleaved rounds of ``block`` consecutive
    calls each, in seconds (after one untimed call of each when ``warm_up``: first calls compile
    or allocate).

    The minimum, not the median: at session creation other processes' time slices are noise
    to remove, not cost to price. One thread runs in the calling thread, so its CPU time is
    measured (immune to time slices lost to other processes) where BLAS is held to one thread too
    (:func:`edge_runtime.threads.run_clock`); several threads in wall time.
    """
    from edge_runtime.threads import run_clock

    clock = run_clock(threads)
    for fn in fns if warm_up else ():
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            for _ in range(block):
                t0 = clock()
                fn()
                times[i].append(clock() - t0)
    return [min(t) for t in times]
