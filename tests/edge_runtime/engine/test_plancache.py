"""The engine's decision cache: a second session of the same model builds the kept plan unmeasured."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime.engine import hybrid, plancache
from tests.edge_runtime.engine import graphs
from tests.edge_runtime.engine.test_hybrid import ORT, _check_against_ort, _feed, _opts, _Prices

pytest.importorskip("onnxruntime")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "engine-cache"
    monkeypatch.setenv(plancache.ENV, str(folder))
    return folder


def _no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("measured although the decision was cached")

    for name in ("_probe_densities", "_interleaved", "_decide"):
        monkeypatch.setattr(hybrid, name, fail)


def _session(model_bytes: bytes, **kwargs) -> edge_runtime.InferenceSession:
    return edge_runtime.InferenceSession(model_bytes, _opts(), providers=ORT, **kwargs)


def test_kept_islands_are_rebuilt_from_the_cache_without_measuring(cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = graphs.mlp()
    data = model.SerializeToString()
    with monkeypatch.context() as m:
        m.setattr(hybrid, "_interleaved", _Prices(island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3), islands=2))
        first = _session(data)
    assert not first.engine_report.cached and len(list(cache.glob("*.json"))) == 1
    _no_measuring(monkeypatch)
    second = _session(data)
    assert second.engine_report.cached and "engine cache" in second.engine_report.outcome
    assert second.get_providers() == first.get_providers() == ["EdgeRuntimeExecutionProvider", "CPUExecutionProvider"]
    assert [d.crossover for d in second.engine_report.islands] == [d.crossover for d in first.engine_report.islands]
    _check_against_ort(model, second, 4)
    _, stats = second.run_with_stats(None, _feed(model, 1))
    assert any(n.kernel == "sparse" for n in stats.nodes)


def test_a_numba_engine_decision_is_kept_too(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = graphs.mlp().SerializeToString()
    with monkeypatch.context() as m:  # (whole, cut plan), then (cut plan, numba engine)
        m.setattr(hybrid, "_interleaved", _Prices(island=(1e-3, 1e-4), cut=[(1e-3, 0.9e-3), (0.9e-3, 0.5e-3)],
                                                  islands=2))
        assert _session(data).dense_engine == "numba"
    _no_measuring(monkeypatch)
    again = _session(data)
    assert again.dense_engine == "numba" and again.engine_report.cached
    assert again.get_providers() == ["EdgeRuntimeExecutionProvider"]


def test_another_warmup_input_or_thread_count_measures_again(cache: Path) -> None:
    model = graphs.mlp()
    data = model.SerializeToString()
    _session(data)
    feed = _feed(model, 1, seed=5)
    assert not _session(data, warmup_feed=feed).engine_report.cached
    assert _session(data, warmup_feed=feed).engine_report.cached
    two = edge_runtime.SessionOptions()
    two.intra_op_num_threads = 2
    assert not edge_runtime.InferenceSession(data, two, providers=ORT).engine_report.cached
    assert len(list(cache.glob("*.json"))) == 3


@pytest.mark.parametrize("damage", ["not json", '{"version": 1}', "foreign"])
def test_a_damaged_entry_is_measured_again_and_replaced(cache: Path, damage: str) -> None:
    model = graphs.mlp()
    data = model.SerializeToString()
    _session(data)
    (entry,) = cache.glob("*.json")
    doc = json.loads(entry.read_text())
    if damage == "foreign":  # an entry of another key copied in
        doc["key"] = "0" * 64
        entry.write_text(json.dumps(doc))
    else:
        entry.write_text(damage)
    again = _session(data)
    assert not again.engine_report.cached
    _check_against_ort(model, again, 1)
    assert _session(data).engine_report.cached  # rewritten


def test_off_keeps_nothing_and_dense_models_never_touch_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plancache.ENV, "off")
    assert plancache.directory() is None
    _session(graphs.mlp().SerializeToString())
    folder = tmp_path / "c"
    monkeypatch.setenv(plancache.ENV, str(folder))
    _session(graphs.dense_silu_cnn().SerializeToString())  # no candidate: nothing to decide
    assert not folder.exists()


def test_key_covers_model_feeds_and_settings() -> None:
    x = {"x": np.zeros((1, 4), np.float32)}
    y = {"x": np.ones((1, 4), np.float32)}
    base = plancache.key(b"model", [x], (1, True))
    assert base == plancache.key(b"model", [{"x": np.zeros((1, 4), np.float32)}], (1, True))
    assert base != plancache.key(b"model2", [x], (1, True))
    assert base != plancache.key(b"model", [y], (1, True))
    assert base != plancache.key(b"model", [x], (2, True))
    assert base != plancache.key(b"model", [], (1, True))
    assert base != plancache.key(b"model", [x, y], (1, True))  # every warm-up input counts, in order
    assert plancache.key(b"model", [x, y], (1, True)) != plancache.key(b"model", [y, x], (1, True))


@pytest.mark.parametrize("entry_types", ["kept", "missing", "damaged"])
def test_a_kept_cut_is_rebuilt_from_the_types_in_its_entry(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                           entry_types: str) -> None:
    """The cut's tensor types are in the entry, so a warm session runs no ONNX shape inference (its
    operator registry: 15 ms and 7 MB); an entry without them (an older one) or with damaged ones
    still builds, inferring them again."""
    from edge_runtime.engine import partition

    model = graphs.mlp()
    data = model.SerializeToString()
    with monkeypatch.context() as m:
        m.setattr(hybrid, "_interleaved", _Prices(island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3), islands=2))
        _session(data)
    (entry,) = cache.glob("*.json")
    doc = json.loads(entry.read_text())
    assert doc["plan"] == "cut" and doc["types"]["x"][0] == 1, doc.get("types")
    if entry_types != "kept":
        doc["types"] = {"missing": None, "damaged": {"x": "float"}}[entry_types]
        entry.write_text(json.dumps(doc))
    inferred = []
    infer = partition.value_types
    monkeypatch.setattr(hybrid, "value_types", lambda m: inferred.append(1) or infer(m))
    _no_measuring(monkeypatch)
    again = _session(data)
    assert again.engine_report.cached and len(again.plan.steps) > 1
    assert len(inferred) == (0 if entry_types == "kept" else 1)
    _check_against_ort(model, again, 4)


def test_types_round_trip_through_an_entry() -> None:
    from onnx import TensorProto, helper

    from edge_runtime.engine.partition import types_from_doc, types_to_doc

    types = {"x": helper.make_tensor_type_proto(TensorProto.FLOAT, ["N", 3, None]),
             "i": helper.make_tensor_type_proto(TensorProto.INT64, None)}
    back = types_from_doc(json.loads(json.dumps(types_to_doc(types, ["x", "i"]))))
    assert back == types
    assert types_from_doc({"x": [1]}) is None and types_from_doc([]) is None and types_from_doc({}) is None
