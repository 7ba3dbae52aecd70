"""The onnxruntime-backed engine: cut graphs agree with onnxruntime, decisions follow the prices."""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest

import edge_runtime
from edge_runtime.engine import hybrid
from edge_runtime.engine import ort as ortx
from edge_runtime.engine.partition import ISLAND, partition
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.onnx_io import graph_io
from tests.edge_runtime.engine import graphs
from tests.edge_runtime.engine.graphs import FreedBytes

ort = pytest.importorskip("onnxruntime")

ORT = ["CPUExecutionProvider"]
REL_TOL = 1e-4


def _opts(threads: int = 1) -> edge_runtime.SessionOptions:
    o = edge_runtime.SessionOptions()
    o.intra_op_num_threads = threads
    return o


def _feed(model: onnx.ModelProto, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = model.graph.input[0]
    shape = [batch if d.dim_param else d.dim_value for d in x.type.tensor_type.shape.dim]
    return {x.name: rng.standard_normal(shape).astype(np.float32)}


def _check_against_ort(model: onnx.ModelProto, sess: edge_runtime.InferenceSession, batch: int) -> None:
    feed = _feed(model, batch)
    want = ort.InferenceSession(model.SerializeToString(), providers=ORT).run(None, feed)
    got = sess.run(None, feed)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=0, atol=REL_TOL * max(1.0, float(np.abs(w).max())))


MODELS = {"mlp": graphs.mlp, "cnn_residual": graphs.cnn_residual, "shared_input": graphs.shared_input,
          "with_if": graphs.with_if}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("sparsity", ["off", "auto", "force"])
def test_cut_graphs_match_onnxruntime(name: str, sparsity: str) -> None:
    model = MODELS[name]()
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, sparsity=sparsity)
    # in auto the numba engine may win the timing at session creation (then it runs the model)
    assert sess.dense_engine == "onnxruntime" or sparsity == "auto"
    for batch in (1, 4):
        _check_against_ort(model, sess, batch)
    if sparsity == "force":  # every candidate became an island that runs sparse
        assert sess.get_providers() == ["EdgeRuntimeExecutionProvider", "CPUExecutionProvider"]
        _, stats = sess.run_with_stats(None, _feed(model, 1))
        assert any(n.kernel == "sparse" for n in stats.nodes)
    if sparsity == "off":
        assert sess.get_providers() == ["CPUExecutionProvider"] and len(sess.plan.steps) == 1


def test_partition_orders_stages_and_keeps_branches_in_early_segments() -> None:
    model = graphs.cnn_residual()
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]
    conv1, conv2 = names.index("Conv_3"), names.index("Conv_5")
    stages = partition(model, [(conv1, conv1 + 1), (conv2,)])
    kinds = [s.kind for s in stages]
    assert kinds == ["segment", ISLAND, "segment", ISLAND, "segment"]
    produced = set(model.graph.input[0].name for _ in [0]) | {t.name for t in model.graph.initializer}
    for stage in stages:  # every stage reads only what earlier stages made
        assert set(stage.inputs) <= produced, (stage.name, set(stage.inputs) - produced)
        produced |= set(stage.outputs)
    assert {o.name for o in model.graph.output} <= produced
    # the residual's source r0 is computed in the first segment and handed forward
    assert "r0" in stages[0].outputs


def test_dense_model_runs_as_one_onnxruntime_session() -> None:
    model = graphs.dense_silu_cnn()
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert sess.engine_report.candidates == 0 and len(sess.plan.steps) == 1
    _check_against_ort(model, sess, 1)


class _Prices:
    """Deterministic session-creation timing: (dense, sparse) for each island (one pair for all, or a
    list of pairs in island order; the sparse kernel at the higher pricing density takes twice its
    time), then (whole, cut plan), then (cut plan, numba engine); ``cut`` is one pair for both, or a
    list of pairs in call order."""

    def __init__(self, island: tuple[float, float] | list[tuple[float, float]],
                 cut: tuple[float, float] | list[tuple[float, float]], islands: int) -> None:
        self.island, self.islands, self.calls = island, islands, 0
        self.cut = cut if isinstance(cut, list) else [cut, (cut[1], 2 * cut[1])]  # numba slower by default

    def __call__(self, fns, threads, repeats=hybrid.REPEATS, warm_up=True, block=1):
        for fn in fns:
            fn()
        self.calls += warm_up  # several warm-up feeds: one timing per feed, the first warms up; one price
        if self.calls <= self.islands:
            dense, sparse = self.island[self.calls - 1] if isinstance(self.island, list) else self.island
            return [dense, sparse, 2 * sparse]
        return list(self.cut[min(self.calls - self.islands, len(self.cut)) - 1])


def _fixed_prices(monkeypatch: pytest.MonkeyPatch, island: Any, cut: Any,
                  islands: int = 2) -> None:
    """The mlp has two auto candidates (the MatMul and the Gemm after a Relu)."""
    monkeypatch.setattr(hybrid, "_interleaved", _Prices(island, cut, islands))


def test_islands_are_kept_when_the_cut_plan_beats_the_whole_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = graphs.mlp()
    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3))
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT)
    report = sess.engine_report
    assert report.candidates == 2 and all(d.kept for d in report.islands)
    assert sess.get_providers() == ["EdgeRuntimeExecutionProvider", "CPUExecutionProvider"]
    # crossover where the sparse time (a line through its two measured points) reaches 0.9x dense
    d = report.islands[0]
    d1 = min(1.0, max(3 * d.expected_density, d.expected_density + 0.2))
    slope = 1e-4 / (d1 - d.expected_density)  # 1e-4 s at the expected density, 2e-4 s at d1
    want = min(1.0, (0.9e-3 - (1e-4 - slope * d.expected_density)) / slope)
    assert d.crossover == pytest.approx(want, rel=1e-2)
    _check_against_ort(model, sess, 1)


def test_numba_engine_replaces_the_cut_plan_when_it_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    # (whole, cut plan), then (cut plan, numba engine)
    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=[(1e-3, 0.9e-3), (0.9e-3, 0.5e-3)])
    model = graphs.mlp()
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT)
    assert sess.dense_engine == "numba" and sess.get_providers() == ["EdgeRuntimeExecutionProvider"]
    assert "numba kept" in sess.engine_report.outcome
    _check_against_ort(model, sess, 4)


@pytest.mark.parametrize("again", ["path", "reread"])
def test_a_first_session_lets_the_model_go_as_early_as_it_can(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path, again: str) -> None:
    """Measuring, the planner holds no copy it no longer needs: our bytes go before the density
    probe's onnxruntime session parses its copy (the whole-model session is built from the file,
    which onnxruntime reads itself, or from the bytes read again, as a bundle's model is), and the
    proto is held by nothing but the source while the numba engine's plan is built (which drops it
    once decoded)."""
    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3))
    model = graphs.mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    data = FreedBytes(path.read_bytes())
    monkeypatch.setattr(FreedBytes, "freed", False)
    src = hybrid.ModelSource(onnx.load(path), data, str(path) if again == "path" else None, disposable=True,
                             reread=path.read_bytes if again == "reread" else None)
    del data
    made: list[tuple[type, bool]] = []
    real = ortx.make_session

    def spy(what: Any, *args: Any, **kwargs: Any) -> Any:
        made.append((type(what), FreedBytes.freed))
        return real(what, *args, **kwargs)

    refs: list[int] = []

    def numba_plan() -> Any:
        refs.append(sys.getrefcount(src.model))  # the source's reference and the call's own
        raise EdgeRuntimeError("not timed in this test")

    monkeypatch.setattr(ortx, "make_session", spy)
    inputs, outputs = graph_io(model)
    plan, report, _ = hybrid.build(src, hybrid.EngineConfig(numba_plan=numba_plan), inputs, outputs)
    # the probe's copy, then the file itself or its bytes read again
    assert made[:2] == [(bytes, True), (str if again == "path" else bytes, True)]
    assert refs == [2]
    assert all(d.kept for d in report.islands) and len(plan.steps) > 1


@pytest.mark.parametrize("fits", [True, False])
def test_a_warm_cut_plan_builds_numba_islands_from_weights_decoded_before_the_proto_went(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fits: bool) -> None:
    """The second session of a model whose kept plan is a cut with numba islands decodes the
    islands' weights, then lets the proto lose them, then builds the kernels: the proto, a decoded
    weight and its layout are never held at once. An engine-cache entry that does not fit the
    model after that loads the model again and measures, and both agree with onnxruntime."""
    import glob
    import json

    from edge_runtime.engine import islands

    monkeypatch.setenv("EDGE_RUNTIME_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hybrid, "LINE_CHECK_BELOW", 0.0)  # no line check: nothing pending
    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=[(1e-3, 0.5e-3), (0.5e-3, 2e-3)])  # numba slower
    model = graphs.mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    first = edge_runtime.InferenceSession(str(path), _opts(), providers=ORT)
    assert "cut kept" in first.engine_report.outcome, first.engine_report.outcome
    if not fits:  # an island the model does not have: the kept plan cannot be built
        (entry,) = glob.glob(str(tmp_path / "cache" / "*.json"))
        doc = json.loads(Path(entry).read_text())
        doc["limits"]["no such layer"] = 0.5
        Path(entry).write_text(json.dumps(doc))
        _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=[(1e-3, 0.5e-3), (0.5e-3, 2e-3)])  # measured again
    seen: list[tuple[bool, list[str]]] = []  # per island built: the proto held its weight; decoded names
    real = islands.prepare

    def spy(m: onnx.ModelProto, cand: Any, types: Any, threads: int, kernels: str = "numba",
            decoded: Any = None) -> Any:
        weight = m.graph.node[cand.nodes[0]].input[1]
        stored = next(t for t in m.graph.initializer if t.name == weight)
        seen.append((bool(stored.raw_data or stored.float_data), sorted(decoded or {})))
        return real(m, cand, types, threads, kernels, decoded)

    monkeypatch.setattr(islands, "prepare", spy)
    warm = edge_runtime.InferenceSession(str(path), _opts(), providers=ORT)
    if fits:
        assert warm.engine_report.cached and "cut kept" in warm.engine_report.outcome
        assert seen == [(False, ["W2", "W3"]), (False, ["W3"])]
    else:
        assert not warm.engine_report.cached
        assert seen[-1][0] and seen[-1][1] == []  # measured on the model loaded again, whole
    for batch in (1, 4):
        _check_against_ort(model, warm, batch)


@pytest.mark.parametrize("cut_s", [2e-3, 0.97e-3])  # slower, or faster by less than MIN_PLAN_GAIN
def test_whole_model_when_the_cut_plan_is_not_faster(monkeypatch: pytest.MonkeyPatch, cut_s: float) -> None:
    """Islands that win alone (here 10x) still lose when the cut plan as a whole is not faster:
    segment boundaries cost onnxruntime its layout and each session call its overhead."""
    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=(1e-3, cut_s))
    sess = edge_runtime.InferenceSession(graphs.mlp().SerializeToString(), _opts(), providers=ORT)
    assert sess.get_providers() == ["CPUExecutionProvider"] and len(sess.plan.steps) == 1
    assert all(d.kept for d in sess.engine_report.islands)
    assert "the cut plan took" in sess.engine_report.outcome


def test_the_islands_worth_their_cut_are_tried_alone_when_all_of_them_lose(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both islands beat their dense path, the cut plan with both loses; the boundaries' measured
    cost (1.2 - (1.0 - 1.1) = 1.3 ms, 0.65 per island) exceeds the weak island's 0.2 ms gain but
    not the strong one's 0.9 ms: the strong island alone is cut, timed, and kept."""
    model = graphs.mlp()
    # islands (dense, sparse); (whole, both islands); (whole, the strong one alone); (cut, numba)
    _fixed_prices(monkeypatch, island=[(1e-3, 1e-4), (1e-3, 0.8e-3)],
                  cut=[(1e-3, 1.2e-3), (1e-3, 0.8e-3), (0.8e-3, 1.6e-3)])
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT)
    report = sess.engine_report
    strong, weak = report.islands
    assert strong.kept and not weak.kept and weak.sparse_ms < weak.dense_ms
    assert report.cut_ms == pytest.approx(0.8) and "with all 2 islands" in report.outcome
    assert sess.get_providers() == ["EdgeRuntimeExecutionProvider", "CPUExecutionProvider"]
    islands = [s.node.name for s in sess.plan.steps if s.node.op_type != "OnnxRuntimeSegment"]
    assert islands == [strong.name]
    _check_against_ort(model, sess, 4)


def test_whole_model_when_the_strongest_islands_alone_lose_too(monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_prices(monkeypatch, island=[(1e-3, 1e-4), (1e-3, 0.8e-3)],
                  cut=[(1e-3, 1.2e-3), (1e-3, 0.99e-3)])
    sess = edge_runtime.InferenceSession(graphs.mlp().SerializeToString(), _opts(), providers=ORT)
    assert sess.get_providers() == ["CPUExecutionProvider"] and len(sess.plan.steps) == 1
    assert "its 1 strongest islands alone took 0.990 ms" in sess.engine_report.outcome


def test_islands_slower_than_dense_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_prices(monkeypatch, island=(1e-3, 0.9e-3), cut=(1e-3, 1e-3))
    sess = edge_runtime.InferenceSession(graphs.mlp().SerializeToString(), _opts(), providers=ORT)
    assert not any(d.kept for d in sess.engine_report.islands)
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_annotated_density_is_what_islands_are_priced_at(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_runtime.annotations import ANNOTATION_KEY
    import json

    model = graphs.mlp(bias_shift=0.0)  # ~half the hiddens active on N(0, 1) inputs
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]
    layers = [{"node": names[3], "input": "h1", "op_type": "MatMul", "density": 0.05}]
    onnx.helper.set_model_props(model, {ANNOTATION_KEY: json.dumps({"version": 1, "layers": layers})})
    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=(1e-3, 1e-3))
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT)
    by_name = {d.name: d for d in sess.engine_report.islands}
    assert by_name[names[3]].density_source == "annotation"
    assert by_name[names[3]].expected_density == pytest.approx(0.05, abs=1 / 256)


def test_several_warmup_inputs_price_islands_at_their_median_density(monkeypatch: pytest.MonkeyPatch) -> None:
    """One image decides for the line only if it is typical: the islands are priced at the median
    of their input densities over the warm-up feeds (not at the first feed's), and the cut is
    timed over all of them."""
    import statistics

    from onnx import numpy_helper

    model = graphs.mlp()
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    base = _feed(model, 1)["x"]
    feeds = [{"x": base * s} for s in (0.5, 4.0, 1.0)]  # the first hidden layer sparse, dense, between
    dens = [np.count_nonzero(np.maximum(f["x"] @ inits["W1"] + inits["b1"], 0)) / inits["W1"].shape[1] for f in feeds]
    assert len(set(dens)) == 3 and dens[0] != statistics.median(dens)
    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3))
    ran: list[tuple[int, bool, int]] = []
    prices = hybrid._interleaved

    def counting(fns: Any, threads: int, repeats: int = hybrid.REPEATS, warm_up: bool = True, block: int = 1) -> Any:
        ran.append((repeats, warm_up, block))
        return prices(fns, threads, repeats, warm_up, block)

    monkeypatch.setattr(hybrid, "_interleaved", counting)
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, warmup_feed=feeds)
    first = {d.name: d for d in sess.engine_report.islands}["MatMul_3"]
    assert first.density_source == "median of 3 warm-up inputs"
    assert first.expected_density == pytest.approx(statistics.median(dens), abs=1 / 256)
    # the plans' timings (whole vs cut, then cut vs numba): each feed timed on its own, the first warmed up
    per_feed = [(hybrid.PLAN_ROUNDS, first, hybrid.FEED_BLOCK) for first in (True, False, False)]
    assert ran[2:] == per_feed * 2
    _check_against_ort(model, sess, 1)


@pytest.mark.parametrize("bad, needle", [("x", "warmup_feed is a str"), ([], "a list of 0 items"),
                                         ([{"x": 1}, 3], "a list of 2 items")])
@pytest.mark.parametrize("providers", [ORT, ["EdgeRuntimeExecutionProvider"]])
def test_a_bad_warmup_feed_is_one_clear_error(bad: Any, needle: str, providers: list[str]) -> None:
    with pytest.raises(edge_runtime.InvalidArgumentError, match="expected one feed") as err:
        edge_runtime.InferenceSession(graphs.mlp().SerializeToString(), _opts(), providers=providers, warmup_feed=bad)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_numba_engine_takes_a_list_of_warmup_feeds() -> None:
    """Its automatic thread choice and kernel priming run the first feed."""
    model = graphs.mlp()
    feeds = [_feed(model, 1, seed=s) for s in range(3)]
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(0), providers=["EdgeRuntimeExecutionProvider"],
                                         warmup_feed=feeds)
    assert sess.dense_engine == "numba"
    _check_against_ort(model, sess, 1)


def test_at_most_max_warmup_feeds_are_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_runtime import session

    _fixed_prices(monkeypatch, island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3))
    model = graphs.mlp()
    feeds = [_feed(model, 1, seed=s) for s in range(session.MAX_WARMUP_FEEDS + 3)]
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, warmup_feed=feeds)
    want = f"median of {session.MAX_WARMUP_FEEDS} warm-up inputs"
    assert {d.density_source for d in sess.engine_report.islands} == {want}


def test_dense_candidates_are_not_priced() -> None:
    """Inputs measured above PRICE_MAX_DENSITY on the warm-up input build no island at all."""
    model = graphs.mlp(bias_shift=3.0)  # the first hidden layer is all positive: density 1
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT)
    assert sess.engine_report.candidates == 2
    assert "MatMul_3" not in {d.name for d in sess.engine_report.islands}


def test_crossover_is_where_the_sparse_line_meets_the_dense_time() -> None:
    # a fixed cost plus a cost per non-zero: 0.04 ms at 0.03, 0.10 ms at 0.23; dense 0.26 ms
    assert hybrid._crossover(0.03, 0.04, 0.23, 0.10, 0.26) == pytest.approx((0.234 - 0.031) / 0.3)
    # the old line through the origin from the first point alone said 0.9 * 0.03 * 0.26 / 0.04 = 0.18
    assert hybrid._crossover(0.03, 0.04, 0.23, 0.10, 0.26) > 0.6
    assert hybrid._crossover(0.1, 0.05, 0.3, 0.5, 0.2) == pytest.approx(0.1 + (0.18 - 0.05) / 2.25)  # between them
    assert hybrid._crossover(0.1, 0.05, 0.3, 0.04, 0.2) == pytest.approx(0.3)  # flat: no further than measured
    assert hybrid._crossover(0.1, 0.05, 0.3, 0.04, 0.02) == pytest.approx(0.1 * 0.018 / 0.05)
    assert hybrid._crossover(0.5, 0.01, 1.0, 0.02, 1.0) == 1.0  # capped at 1


def test_at_density_hits_the_target() -> None:
    x = np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32)
    for d in (0.0, 0.1, 0.5, 1.0):
        assert np.count_nonzero(hybrid.at_density(np.maximum(x, 0), d)) == round(d * x.size)


def in_two_threads(worker: Callable[[int], None]) -> None:
    """Run ``worker(0)`` and ``worker(1)`` at once, in two threads, and wait for both."""
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("providers", [ORT, ["EdgeRuntimeExecutionProvider"]])
def test_two_threads_running_one_session_get_their_own_outputs_and_stats(providers: list[str]) -> None:
    model = graphs.mlp(bias_shift=-0.5)
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=providers, sparsity="force")
    ref = ort.InferenceSession(model.SerializeToString(), providers=ORT)
    feeds = [{"x": (_feed(model, 1, seed)["x"] * (0.2 + seed)).astype(np.float32)} for seed in range(6)]
    want = [ref.run(None, f)[0] for f in feeds]
    want_density = [[n.density for n in sess.run_with_stats(None, f)[1].nodes if n.kernel == "sparse"]
                     for f in feeds]
    assert len({tuple(d) for d in want_density}) > 1  # the feeds differ in density
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(20):
            for i in range(k, len(feeds), 2):
                out, stats = sess.run_with_stats(None, feeds[i])
                if not np.allclose(out[0], want[i], atol=1e-4):
                    errors.append(f"output {i}")
                if [n.density for n in stats.nodes if n.kernel == "sparse"] != want_density[i]:
                    errors.append(f"stats {i}")

    in_two_threads(worker)
    assert not errors, errors[:5]
