from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

import device_profiles as dp
from edge_runtime.errors import InvalidArgumentError
from edge_runtime.graph import Graph, Node, ValueInfo
from edge_runtime.profiling import costmodel as cm

# Published batch-1 latencies, ms (references.md §3)
PUBLISHED = {("mobilenetv2", "raspberry-pi-4"): 61.9, ("mobilenetv2", "raspberry-pi-5"): 10.5,
             ("mobilenetv2", "jetson-orin-nano"): 6.5, ("resnet18", "raspberry-pi-4"): 123.0,
             ("resnet18", "raspberry-pi-5"): 20.0, ("resnet18", "jetson-orin-nano"): 15.1}


def _graph(node: Node, weights: dict) -> Graph:
    return Graph((node,), weights, (ValueInfo("x", np.dtype("float32"), (1, 3, 8, 8)),), (), {"": 17})


def test_conv_flops_count_each_multiply_add_twice():
    w = np.zeros((8, 3, 3, 3), np.float32)
    node = Node("FusedConv", ("x", "W"), ("y",), {"pads": [1, 1, 1, 1], "strides": [1, 1]}, "conv")
    cost = cm.layer_cost(node, _graph(node, {"W": w}), {"x": (1, 3, 8, 8)})  # output shape derived
    assert cost.output_shape == (1, 8, 8, 8)
    assert cost.flops == 2 * 8 * 8 * 8 * 27
    assert cost.weight_bytes == 4 * w.size
    assert cost.bytes == 4 * (3 * 64 + 8 * 64 + w.size)
    assert cost.family == "conv"


def test_gemm_flops_respect_transB_and_family_by_rows():
    w = np.zeros((10, 6), np.float32)  # (N, K) with transB=1
    node = Node("FusedGemm", ("x", "W"), ("y",), {"transB": 1}, "fc")
    cost = cm.layer_cost(node, _graph(node, {"W": w}), {"x": (1, 6), "y": (1, 10)})
    assert (cost.flops, cost.family) == (2 * 6 * 10, "gemv")
    cost4 = cm.layer_cost(node, _graph(node, {"W": w}), {"x": (4, 6), "y": (4, 10)})
    assert (cost4.flops, cost4.family) == (2 * 4 * 6 * 10, "gemm")


def _compute_bound() -> cm.LayerCost:
    return cm.LayerCost("fc", "FusedGemm", 2e9, 4e3, 2e3, "gemm", (64, 1000))  # 2 GFLOP, 4 kB


def test_halving_peak_doubles_a_compute_bound_estimate():
    pi4 = dp.load_profile("raspberry-pi-4")
    slow = dataclasses.replace(pi4, compute=dp.Compute(pi4.compute.peak_fp32_gflops / 2))
    fast_ms = cm.estimate_latency([_compute_bound()], pi4).latency_ms
    slow_ms = cm.estimate_latency([_compute_bound()], slow).latency_ms
    assert slow_ms == pytest.approx(2 * fast_ms, rel=0.01)
    assert fast_ms == pytest.approx(cm.DEFAULT_EFFICIENCY * 2e9 / 47.9e9 * 1e3, rel=1e-6)


def test_sparse_layers_scale_flops_by_density_below_the_crossover():
    pi4 = dp.load_profile("raspberry-pi-4")  # gemm crossover 0.28
    dense = cm.estimate_latency([_compute_bound()], pi4)
    sparse = cm.estimate_latency([_compute_bound()], pi4, densities={"fc": 0.1})
    above = cm.estimate_latency([_compute_bound()], pi4, densities={"fc": 0.5})
    assert sparse.latency_ms == pytest.approx(0.1 * dense.latency_ms, rel=0.01)
    assert sparse.flops_skipped == pytest.approx(0.9 * 2e9)
    assert above.latency_ms == pytest.approx(dense.latency_ms) and above.flops_skipped == 0


def test_conv_sparse_decision_uses_the_dispatchers_per_shape_scale():
    from edge_runtime.ops.conv_layer import conv_crossover_scale

    prof = dp.load_profile("raspberry-pi-5")
    for w_shape in ((32, 3, 3, 3), (64, 256, 1, 1), (256, 256, 1, 1)):
        w = np.zeros(w_shape, np.float32)
        node = Node("FusedConv", ("x", "W"), ("y",), {"strides": [1, 1]}, "c")
        cost = cm.layer_cost(node, _graph(node, {"W": w}), {"x": (1, w_shape[1], 8, 8)})
        assert cost.family == ("gemm" if w_shape[2:] == (1, 1) else "conv")  # as the dispatcher
        assert cost.sparse_scale == pytest.approx(conv_crossover_scale(w_shape))
        limit = prof.runtime.sparse_crossover[cost.family] * cost.sparse_scale
        dense_t = cm.layer_times(cost, prof, None)
        if cost.sparse_scale == 0.0:  # 64 -> 256 wide is never sparse in auto
            assert cm.layer_times(cost, prof, 0.01) == dense_t
        else:
            assert cm.layer_times(cost, prof, limit * 0.9) != dense_t
            assert cm.layer_times(cost, prof, limit * 1.1 + 1e-6) == dense_t


def test_memory_bound_layer_follows_bandwidth():
    pi4 = dp.load_profile("raspberry-pi-4")
    layer = cm.LayerCost("add", "Add", 1e3, 2.5e7, 0.0, None, (1,))
    est = cm.estimate_latency([layer], pi4)
    assert est.roofline_ms == pytest.approx(2.5e7 / 2.5e9 * 1e3)
    assert est.compute_bound_fraction == 0.0


def test_host_calibration_sets_the_efficiency_and_budget_verdict():
    pi4 = dp.load_profile("raspberry-pi-4")
    layers = [_compute_bound()]
    roof = cm.roofline_seconds(layers, pi4)
    eff = cm.host_efficiency(layers, pi4, 3 * roof)
    assert eff == pytest.approx(3.0)
    tight = dataclasses.replace(pi4, budget=dp.Budget(1.0))
    loose = dataclasses.replace(pi4, budget=dp.Budget(1e6))
    est = cm.estimate_latency(layers, tight, efficiency=eff)
    assert (est.efficiency_source, est.meets_budget) == ("host", False)
    assert cm.estimate_latency(layers, loose).meets_budget is True
    assert cm.estimate_latency(layers, pi4).meets_budget is None
    assert est.to_dict()["estimate"] is True
    with pytest.raises(InvalidArgumentError, match="positive"):
        cm.host_efficiency(layers, pi4, 0.0)


@pytest.fixture(scope="module")
def cnn_costs(tmp_path_factory) -> dict[str, tuple[cm.LayerCost, ...]]:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from tests.edge_runtime.profiling import cnn_models

    out = tmp_path_factory.mktemp("cnn")
    return {name: cm.model_costs(cnn_models.export(cls(), Path(out) / f"{name}.onnx"))
            for name, cls in (("mobilenetv2", cnn_models.MobileNetV2), ("resnet18", cnn_models.ResNet18))}


@pytest.mark.slow  # exports ResNet-18 and MobileNetV2 with torch.onnx (20-60 s)
def test_cnn_flops_match_the_known_mac_counts(cnn_costs):
    gflops = {k: sum(c.flops for c in v) / 1e9 for k, v in cnn_costs.items()}
    assert gflops["mobilenetv2"] == pytest.approx(0.6, rel=0.05)   # ~300 MMAC
    assert gflops["resnet18"] == pytest.approx(3.63, rel=0.05)     # ~1.8 GMAC


@pytest.mark.slow
@pytest.mark.parametrize("model,device", sorted(PUBLISHED))
def test_default_estimates_within_2x_of_published_latencies(cnn_costs, model, device):
    est = cm.estimate_latency(cnn_costs[model], dp.load_profile(device))
    ratio = est.latency_ms / PUBLISHED[(model, device)]
    assert 0.5 <= ratio <= 2.0, f"{model} on {device}: estimate {est.latency_ms:.1f} ms, ratio {ratio:.2f}"
    assert math.isfinite(est.latency_ms) and est.efficiency_source == "default"


@pytest.mark.parametrize("model,device", sorted(PUBLISHED))
def test_profile_command_headline_estimates_stay_within_2x(cnn_costs, model, device, monkeypatch, tmp_path):
    """What `profile MODEL --device X` prints first: the tuned-runtime figure on the device's own threads,
    whatever edge_runtime measured here (a slow host measurement must not drag it off)."""
    import device_profiles
    from edge_runtime.profiling import measure, profiler

    monkeypatch.setattr(cm, "model_costs", lambda proto: cnn_costs[model])
    timing = measure.summarize([0.5] * 5, 1)  # 500 ms here: far slower than any device figure
    edge = profiler.BackendResult("edge", 1.0, 1.0, timing, 0.0, 0.0, None, None)
    ort = profiler.BackendResult("onnxruntime", 1.0, 1.0, measure.summarize([0.25] * 5, 1), 0.0, 0.0, None, None)
    (est,), notes = profiler._estimates(None, [device], [edge, ort], threads=2)
    profile = device_profiles.load_profile(device)
    assert est.threads == min(profile.runtime.threads, profile.cpu.cores) and est.runtime == cm.TUNED_RUNTIME
    ratio = est.latency_ms / PUBLISHED[(model, device)]
    low, high = cm.PUBLISHED_ERROR_BAND
    assert 0.5 <= ratio <= 2.0 and low - 0.01 <= ratio <= high + 0.01
    assert est.edge_runtime_ms >= 2 * est.latency_ms - 1e-9  # x2: edge / onnxruntime measured here
    assert any("published" in n for n in notes)


def test_edge_runtime_figure_never_beats_this_machine_on_slower_cores():
    """A tiny, overhead-bound model: the roofline says microseconds, but a Pi 4 core is slower than this one."""
    host, pi4 = dp.load_profile("host"), dp.load_profile("raspberry-pi-4")
    tiny = cm.LayerCost("fc", "FusedGemm", 2e3, 4e3, 4e3, "gemv", (1, 10))
    est = cm.estimate_latency([tiny], pi4)
    out = cm.edge_runtime_estimate(est, pi4, host, edge_p50_ms=0.77, ort_p50_ms=0.5)
    per_core = (host.compute.peak_fp32_gflops / host.cpu.cores) / (pi4.compute.peak_fp32_gflops / pi4.cpu.cores)
    assert out.edge_runtime_ms == pytest.approx(max(est.latency_ms * 0.77 / 0.5, 0.77 * per_core))
    if per_core >= 1:
        assert out.edge_runtime_ms >= 0.77
    assert "single-core" in out.edge_runtime_basis or "onnxruntime" in out.edge_runtime_basis
