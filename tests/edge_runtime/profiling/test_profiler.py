from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import device_profiles as dp
from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.executor import NodeStats, RunStats
from edge_runtime.graph import Graph, Node, ValueInfo
from edge_runtime.profiling import BackendUnavailableError, profile_model
from edge_runtime.profiling.layers import layer_table
from edge_runtime.profiling.report import format_text, plot, write_json

BACKEND_FIELDS = {"backend", "init_ms", "first_run_ms", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms",
                  "p99_ms", "max_ms", "items_per_s", "peak_memory_mb", "maxrss_delta_mb",
                  "ratio_p50_vs_onnxruntime", "ratio_pairs_vs_onnxruntime", "layers", "runs"}
LAYER_FIELDS = {"name", "op_type", "output_shape", "time_ms", "time_pct", "density", "kernel", "flops",
                "flops_skipped"}


@pytest.fixture(scope="module")
def budget_profile(tmp_path_factory) -> Path:
    text = (dp.SHIPPED_DIR / "raspberry-pi-4.toml").read_text().replace('name = "raspberry-pi-4"', 'name = "tight"')
    path = tmp_path_factory.mktemp("p") / "tight.toml"
    path.write_text(text + "\n[budget]\nlatency_ms = 1e-9\n")
    return path


@pytest.mark.usefixtures("numba_engine")  # the per-layer rows checked below are the numba engine's
def test_json_has_every_figure_for_every_backend(tiny_path, tmp_path, budget_profile):
    pytest.importorskip("onnxruntime")
    result = profile_model(tiny_path, backends=("edge", "edge-dense", "onnxruntime"), runs=6, warmup=1,
                           devices=("raspberry-pi-4", budget_profile, "host"), progress=False, threads=1)
    data = json.loads(write_json(result, tmp_path / "r.json").read_text())
    assert [b["backend"] for b in data["backends"]] == ["edge", "edge-dense", "onnxruntime"]
    for b in data["backends"]:
        assert BACKEND_FIELDS <= set(b), BACKEND_FIELDS - set(b)
        assert b["runs"] == 6 and b["min_ms"] <= b["p50_ms"] <= b["p90_ms"] <= b["p99_ms"] <= b["max_ms"]
        assert b["init_ms"] > 0 and b["first_run_ms"] > 0 and b["peak_memory_mb"] >= 0
    ort = data["backends"][2]
    assert ort["ratio_p50_vs_onnxruntime"] == pytest.approx(1.0) and ort["layers"] == []
    edge_layers = data["backends"][0]["layers"]
    assert [r["op_type"] for r in edge_layers] == ["Relu", "Mul", "Add"]
    assert all(LAYER_FIELDS <= set(r) for r in edge_layers)
    assert sum(r["time_pct"] for r in edge_layers) == pytest.approx(100.0)
    assert edge_layers[1]["flops"] == 8 and edge_layers[1]["output_shape"] == [1, 8]
    est = {e["device"]: e for e in data["estimates"]}
    assert set(est) == {"raspberry-pi-4", "tight"}          # host is measured, not estimated
    assert all(e["estimate"] is True and e["efficiency_source"] == "default" and e["edge_runtime_ms"] > 0
               and e["threads"] > 0 for e in est.values())
    assert est["tight"]["meets_budget"] is False and est["raspberry-pi-4"]["meets_budget"] is None
    text = format_text(result)
    assert "ESTIMATE" in text and "MISSES it" in text


def test_unavailable_backend_is_skipped_with_the_reason(tiny_path):
    result = profile_model(tiny_path, backends=("edge", "litert"), runs=2, warmup=0, progress=False)
    assert [b.backend for b in result.backends] == ["edge"]
    assert result.skipped[0][0] == "litert" and "model.tflite" in result.skipped[0][1]
    assert result.backend("edge").ratio_p50_vs_onnxruntime is None
    with pytest.raises(BackendUnavailableError, match="none of the backends"):
        profile_model(tiny_path, backends=("litert",), runs=1, warmup=0, progress=False)


def test_bundle_golden_input_and_files(tiny_bundle, tmp_path):
    result = profile_model(tiny_bundle, backends=("edge-dense",), runs=2, warmup=0, input="golden", progress=False)
    # a dynamic batch axis: golden samples are profiled one per call, at batch 1
    assert result.batch == 1 and "golden samples" in result.input
    assert result.backend("edge-dense").layers[0].output_shape == (1, 8)
    np.save(tmp_path / "x.npy", np.ones((3, 8), np.float64))   # float64 is cast to the model's float32
    assert profile_model(tiny_bundle, backends=("edge",), runs=1, warmup=0, input=tmp_path / "x.npy",
                         progress=False).batch == 3


def test_bad_arguments_say_what_to_do(tiny_path, tmp_path):
    with pytest.raises(InvalidArgumentError, match="choose one or more"):
        profile_model(tiny_path, backends=("tensorrt",))
    with pytest.raises(InvalidArgumentError, match="runs"):
        profile_model(tiny_path, backends=("edge",), runs=0)
    with pytest.raises(BundleError, match="golden.npz"):
        profile_model(tiny_path, backends=("edge",), runs=1, input="golden")
    with pytest.raises(BundleError, match="no model.onnx"):
        profile_model(tmp_path, backends=("edge",), runs=1)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        profile_model(tmp_path / "missing.onnx")


def test_layer_table_counts_skipped_flops_where_the_sparse_kernel_ran():
    w = np.zeros((16, 4), np.float32)  # (K, N)
    nodes = (Node("FusedMatMul", ("x", "W"), ("h",), {}, "fc1"), Node("Relu", ("h",), ("y",), {}, "act"))
    graph = Graph(nodes, {"W": w}, (ValueInfo("x", np.dtype("float32"), (1, 16)),), (), {"": 17})
    runs = [RunStats((NodeStats("fc1", "FusedMatMul", "sparse", d, 0.003, (1, 4)),
                      NodeStats("act", "Relu", "plain", None, 0.001, (1, 4)))) for d in (0.2, 0.25, 0.3)]
    fc1, act = layer_table(runs, graph, {"x": (1, 16)})
    assert fc1.flops == 2 * 16 * 4 and fc1.density == pytest.approx(0.25)
    assert fc1.flops_skipped == pytest.approx(fc1.flops * 0.75)
    assert (fc1.time_ms, fc1.time_pct) == (pytest.approx(3.0), pytest.approx(75.0))
    assert act.flops_skipped == 0 and act.density is None


def test_plot_writes_a_png(tiny_path, tmp_path):
    pytest.importorskip("matplotlib")
    result = profile_model(tiny_path, backends=("edge",), runs=2, warmup=0, devices=("raspberry-pi-5",),
                           progress=False)
    out = plot(result, tmp_path / "chart.png")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"


def test_slower_reasons_name_what_the_int8_backend_ran_as() -> None:
    """The int8 rows get the same "ran as" / "why slower" lines as fp32 edge, worded against onnxruntime-int8."""
    from types import SimpleNamespace

    from edge_runtime.profiling.report import slower_reasons

    timing = SimpleNamespace(p50_ms=0.39)
    b = SimpleNamespace(backend="edge-int8", engine="numba engine: edge_runtime's kernels run every layer",
                        providers=("EdgeRuntimeExecutionProvider",), ratio_p50_vs_onnxruntime=1.12, layers=(),
                        timing=timing)
    lines = slower_reasons(SimpleNamespace(backends=[b]))
    assert "edge-int8 ran as EdgeRuntimeExecutionProvider: numba engine" in lines[0]
    assert lines[1].startswith("edge-int8 is 1.12x slower than onnxruntime-int8: ")
