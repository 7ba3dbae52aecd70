"""A small measured gain is checked on the first images run; the faster of the kept plan and the whole
model in one onnxruntime session stays (edge_runtime.engine.linecheck)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime import executor
from edge_runtime.engine import hybrid, linecheck, plancache
from edge_runtime.engine import ort as ortx
from tests.edge_runtime.engine import graphs
from tests.edge_runtime.engine.test_hybrid import ORT, _check_against_ort, _feed, _opts, _Prices, in_two_threads

ort = pytest.importorskip("onnxruntime")

CUT = ["EdgeRuntimeExecutionProvider", "CPUExecutionProvider"]


class _Plan:
    """A stand-in plan (LineCheck only hands plans back)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _drive(check: linecheck.LineCheck, cost: dict[str, list[float]]) -> linecheck.Verdict:
    """Run calls through ``check`` whose times come from ``cost`` (per plan, in call order) until it decides."""
    seen = {"cand": 0, "whole": 0}
    for _ in range(1000):
        plan, which, block, counted = check.take()
        times = cost[plan.name]
        seconds = times[seen[plan.name] % len(times)]
        seen[plan.name] += 1
        verdict = check.record(which, block, seconds) if counted else None
        if verdict is not None:
            return verdict
    raise AssertionError("the check never decided")


def test_the_faster_plan_on_the_line_is_kept_and_first_calls_of_a_block_are_not_counted() -> None:
    cand, whole = _Plan("cand"), _Plan("whole")
    # every block's first call is slow (caches the other plan filled): not counted, so the candidate wins
    check = linecheck.LineCheck(cand, whole, threads=1, calls=8, block=4)
    verdict = _drive(check, {"cand": [9.0, 1.0, 1.0, 1.0], "whole": [1.1, 1.1, 1.1, 1.1]})
    assert verdict.plan is cand and verdict.candidate_kept
    assert verdict.candidate_ms == pytest.approx(1e3) and verdict.whole_ms == pytest.approx(1.1e3)
    assert verdict.calls == 16 and not check.pending
    assert check.take() == (cand, 0, 0, False)  # a call racing the verdict runs the kept plan, uncounted
    assert check.record(0, 0, 1.0) is None  # the verdict is given once

    slower = linecheck.LineCheck(cand, whole, threads=1, calls=8, block=4)
    verdict = _drive(slower, {"cand": [1.05], "whole": [1.0]})
    assert verdict.plan is whole and not verdict.candidate_kept
    assert "whole model kept" in verdict.sentence("cut plan")


def test_blocks_alternate_between_the_plans() -> None:
    cand, whole = _Plan("cand"), _Plan("whole")
    check = linecheck.LineCheck(cand, whole, threads=1, calls=4, block=2)
    order = [check.take()[0].name for _ in range(8)]
    assert order == ["cand", "cand", "whole", "whole", "cand", "cand", "whole", "whole"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "engine-cache"
    monkeypatch.setenv(plancache.ENV, str(folder))
    return folder


def _slow_plan(monkeypatch: pytest.MonkeyPatch, sess: edge_runtime.InferenceSession, slow: str) -> None:
    """Make the session's check see ``slow`` ("candidate" or "whole") take twice the other's time."""
    check = sess._check
    now = [0.0]
    real_execute, real_run = executor.execute, ortx.run
    whole_session = check.whole.steps[0].fn.session  # the session calls it directly, as run() will

    def execute(plan: Any, feed: Any, wanted: Any, stats: Any = None) -> Any:
        now[0] += 2.0 if slow == "candidate" else 1.0
        assert plan is check.candidate
        return real_execute(plan, feed, wanted, stats)

    def run(session: Any, wanted: Any, feed: Any, what: str = "the model") -> Any:
        if session is whole_session:  # (the cut plan's segments call it too)
            now[0] += 2.0 if slow == "whole" else 1.0
        return real_run(session, wanted, feed, what)

    monkeypatch.setattr(executor, "execute", execute)
    monkeypatch.setattr(ortx, "run", run)
    check.clock = lambda: now[0]


def _marginal_session(monkeypatch: pytest.MonkeyPatch, data: bytes,
                      cut_s: float = 0.9e-3) -> edge_runtime.InferenceSession:
    with monkeypatch.context() as m:  # islands win alone; the cut plan beats the whole model by 10%
        m.setattr(hybrid, "_interleaved", _Prices(island=(1e-3, 1e-4), cut=(1e-3, cut_s), islands=2))
        return edge_runtime.InferenceSession(data, _opts(), providers=ORT)


@pytest.mark.parametrize("slow", ["candidate", "whole"])
def test_a_small_gain_is_checked_on_the_first_images_and_kept_in_the_cache(
        cache: Path, monkeypatch: pytest.MonkeyPatch, slow: str) -> None:
    model = graphs.mlp()
    data = model.SerializeToString()
    sess = _marginal_session(monkeypatch, data)
    assert sess.line_check_pending and sess.get_providers() == CUT
    assert sess.engine_report.line_check.startswith("pending: the first 48 images")
    entry = json.loads(next(cache.glob("*.json")).read_text())
    assert entry["line_check"] == "pending"
    ref = ort.InferenceSession(data, providers=ORT)
    with monkeypatch.context() as m:
        _slow_plan(m, sess, slow)
        for i in range(2 * linecheck.CALLS):
            feed = _feed(model, 1, seed=i)
            assert sess.line_check_pending
            np.testing.assert_allclose(sess.run(None, feed)[0], ref.run(None, feed)[0], atol=1e-4)
    assert not sess.line_check_pending
    report = sess.engine_report
    fast, slow_ms = "1000.000 ms", "2000.000 ms"
    cand_ms, whole_ms = (slow_ms, fast) if slow == "candidate" else (fast, slow_ms)
    assert report.line_check.startswith(f"checked on the first 48 images run: cut plan {cand_ms} vs whole {whole_ms}")
    if slow == "candidate":  # the whole model was faster on the line: it runs from now on
        assert sess.get_providers() == ["CPUExecutionProvider"] and len(sess.plan.steps) == 1
        assert report.outcome.startswith("whole model: ") and "whole model kept" in report.outcome
    else:
        assert sess.get_providers() == CUT and "cut plan kept" in report.outcome
    _check_against_ort(model, sess, 4)
    entry = json.loads(next(cache.glob("*.json")).read_text())
    assert entry["line_check"] == "done" and entry["plan"] == ("whole" if slow == "candidate" else "cut")
    again = edge_runtime.InferenceSession(data, _opts(), providers=ORT)  # the checked decision, no check again
    assert again.engine_report.cached and not again.line_check_pending
    assert again.get_providers() == sess.get_providers()
    assert "checked on the first 48 images run" in again.engine_report.outcome
    assert again.engine_report.outcome.count("engine cache") == 1


def test_a_pending_decision_in_the_cache_is_checked_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = graphs.mlp().SerializeToString()
    first = _marginal_session(monkeypatch, data)
    assert first.line_check_pending
    second = edge_runtime.InferenceSession(data, _opts(), providers=ORT)  # before the first one's check ended
    assert second.engine_report.cached and second.line_check_pending and second.get_providers() == CUT


def test_a_clear_gain_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    sess = _marginal_session(monkeypatch, graphs.mlp().SerializeToString(), cut_s=0.5e-3)
    assert not sess.line_check_pending and sess.engine_report.line_check == ""
    assert sess.get_providers() == CUT


def test_two_threads_running_through_the_check_get_the_right_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    model = graphs.mlp()
    data = model.SerializeToString()
    sess = _marginal_session(monkeypatch, data)
    assert sess.line_check_pending
    ref = ort.InferenceSession(data, providers=ORT)
    feeds = [_feed(model, 1, seed) for seed in range(8)]
    want = [ref.run(None, f)[0] for f in feeds]
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(2 * linecheck.CALLS):
            for i in range(k, len(feeds), 2):
                if not np.allclose(sess.run(None, feeds[i])[0], want[i], atol=1e-4):
                    errors.append(f"output {i}")

    in_two_threads(worker)
    assert not errors, errors[:5]
    assert not sess.line_check_pending and sess.engine_report.line_check.startswith("checked on the first")


def test_finish_line_check_runs_feeds_until_the_check_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    model = graphs.mlp()
    sess = _marginal_session(monkeypatch, model.SerializeToString())
    with pytest.raises(edge_runtime.InvalidArgumentError, match="finish_line_check got no feeds"):
        sess.finish_line_check([])
    assert sess.finish_line_check([_feed(model, 1, seed) for seed in range(3)]) == 2 * linecheck.CALLS
    assert not sess.line_check_pending and sess.finish_line_check([]) == 0


def test_warmup_settles_the_check_so_the_cache_holds_the_checked_decision(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_runtime.warmup import warmup

    path = tmp_path / "mlp.onnx"
    path.write_bytes(graphs.mlp().SerializeToString())
    monkeypatch.setenv("EDGE_RUNTIME_DENSE_ENGINE", "onnxruntime")  # what a device with onnxruntime gets
    monkeypatch.setattr(hybrid, "_interleaved", _Prices(island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3), islands=2))
    result = warmup(path, threads=1)
    assert result["modes"]["auto"]["line_check_runs"] == 2 * linecheck.CALLS - 2, result  # after its two runs
    assert "line_check_runs" not in result["modes"]["off"]
    entries = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert [e["line_check"] for e in entries] == ["done"]
