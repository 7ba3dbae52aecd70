"""export(target_sparsity=...): thresholds fitted at export, annotated, measured on device."""
from __future__ import annotations

import argparse
import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import edge_runtime
from edge_runtime.annotations import read_annotations
from exporters import ExportError, calibrate, export
from exporters.annotations import build_annotations, consumer_thresholds
from exporters.commands import add_export_parser
from exporters.thresholds import fit_thresholds

TARGET = 0.8


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),            # (B, 8, 8, 8)
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),            # (B, 8, 8, 8)
        nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(),   # (B, 32)
        nn.Linear(32, 4)).eval()


def _calib() -> torch.Tensor:
    return torch.randn(96, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, calib = _cnn(), _calib()
    probe = calib[:16]
    with torch.no_grad():
        before = model(probe).clone()
    state = copy.deepcopy(model.state_dict())
    bundle = export(model, calib[:1], tmp_path_factory.mktemp("t") / "b", calibration=calib,
                    formats=("onnx",), target_sparsity=TARGET, max_accuracy_drop=100.0)
    with torch.no_grad():
        after = model(probe)
    return {"model": model, "calib": calib, "bundle": bundle, "before": before,
            "after": after, "state": state}


def _annotated(bundle) -> dict[str, dict]:
    doc = read_annotations(onnx.load(bundle.onnx_path))
    return {layer["module"]: layer for layer in doc["layers"]}


def test_threshold_fed_layers_annotated(exported):
    layers = _annotated(exported["bundle"])
    fit = exported["bundle"].manifest["sparsity"]["thresholds"]
    fed = {c for a in fit["activations"].values() if a["threshold"] is not None
           for c in a["consumers"]}
    assert fed == {"2", "5", "7"}  # every ReLU in front of a Conv/Linear got a threshold
    for module in fed:
        assert layers[module]["relu_fed"] is True
        assert layers[module]["threshold"] is not None and layers[module]["threshold"] > 0
    assert layers["0"]["threshold"] is None and layers["0"]["relu_fed"] is False
    assert fit["source"] == "fit_thresholds" and fit["target_sparsity"] == TARGET
    assert fit["max_accuracy_drop"] == 100.0 and fit["metric"] == "agreement"
    assert fit["backoffs"] == [] and 0.0 <= fit["metric_after"] <= fit["metric_before"] <= 100.0


def test_user_model_untouched(exported):
    model = exported["model"]
    assert torch.equal(exported["before"], exported["after"])
    assert not any(type(m).__name__ == "FATReLU" for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, exported["state"][key]), key


def test_runtimes_match_thresholded_golden(exported):
    bundle = exported["bundle"]
    golden = np.load(bundle.golden_path)
    x, y = golden["x"], golden["y"]
    with torch.no_grad():
        plain = exported["model"](torch.from_numpy(x)).numpy()
    assert not np.allclose(plain, y, atol=1e-4)  # golden comes from the thresholded copy
    feed = {bundle.manifest["inputs"][0]["name"]: x}
    theirs = ort.InferenceSession(str(bundle.onnx_path),
                                  providers=["CPUExecutionProvider"]).run(None, feed)[0]
    ours = edge_runtime.InferenceSession(str(bundle.onnx_path)).run(None, feed)[0]
    tol = 1e-4 * float(np.abs(y).max())
    np.testing.assert_allclose(theirs, y, rtol=1e-4, atol=tol)
    np.testing.assert_allclose(ours, y, rtol=1e-4, atol=tol)


def test_measured_density_near_target(exported):
    bundle, calib = exported["bundle"], exported["calib"]
    layers = _annotated(bundle)
    untreated = {s.module: s.density for s in calibrate(exported["model"], calib).layers}
    sess = edge_runtime.InferenceSession(str(bundle.onnx_path), sparsity="force")
    _, stats = sess.run_with_stats(None, {bundle.manifest["inputs"][0]["name"]: calib.numpy()})
    measured = {n.name: n.density for n in stats.nodes if n.density is not None}
    for module in ("2", "5", "7"):
        density = measured[layers[module]["node"]]
        assert density <= untreated[module] + 1e-6, module
        assert abs(density - (1 - TARGET)) <= 0.1, (module, density)
        assert abs(density - layers[module]["density"]) <= 1e-3, module  # annotation agrees


def test_precomputed_per_channel_thresholds(tmp_path):
    model, calib = _cnn(), _calib()
    res = fit_thresholds(model, calib, target_sparsity=TARGET, max_accuracy_drop=100.0,
                         per_channel=True)
    bundle = export(model, calib[:1], tmp_path / "b", calibration=calib, formats=("onnx",),
                    thresholds=res)
    layers = _annotated(bundle)
    assert layers["2"]["thresholds"] == pytest.approx(res.thresholds["1"], abs=1e-6)
    assert layers["2"]["threshold"] == pytest.approx(min(res.thresholds["1"]), abs=1e-6)
    assert len(layers["7"]["thresholds"]) == 32
    assert bundle.manifest["sparsity"]["thresholds"]["source"] == "precomputed"
    golden = np.load(bundle.golden_path)
    with torch.no_grad():
        expected = res.model(torch.from_numpy(golden["x"])).numpy()
    np.testing.assert_allclose(golden["y"], expected, rtol=1e-6, atol=1e-6)


def test_consumer_thresholds_inverts_and_takes_min():
    got = consumer_thresholds({"a": 0.5, "b": [0.2, 0.4], "c": 0.3},
                              {"a": ["x", "y"], "b": ["y", "z"], "c": []})
    assert got == {"x": 0.5, "y": 0.2, "z": [0.2, 0.4]}


def test_annotation_without_thresholds_keeps_null():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    report = calibrate(net, torch.randn(8, 4))
    node = onnx.helper.make_node("Gemm", ["h", "w"], ["y"], name="g")
    doc = build_annotations(report, {"2": node})
    assert doc["layers"][0]["threshold"] is None and "thresholds" not in doc["layers"][0]


@pytest.mark.parametrize("calibration", [None, "report"])
def test_target_sparsity_needs_calibration_data(tmp_path, calibration):
    model = _cnn()
    if calibration == "report":
        calibration = calibrate(model, _calib()[:8])
    with pytest.raises(ExportError, match="needs calibration data"):
        export(model, _calib()[:1], tmp_path / "b", calibration=calibration,
               formats=("onnx",), target_sparsity=TARGET)
    assert list(tmp_path.iterdir()) == []


def test_target_and_precomputed_are_exclusive(tmp_path):
    with pytest.raises(ExportError, match="not both"):
        export(_cnn(), _calib()[:1], tmp_path / "b", calibration=_calib(), formats=("onnx",),
               target_sparsity=TARGET, thresholds=object())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers())
    return parser


def test_cli_flags_parse_and_reach_export(monkeypatch, tmp_path):
    args = _parser().parse_args(["export", "m.pt2", "--input-shape", "1,4", "--out", "o",
                                 "--calib", "c.npy", "--target-sparsity", "0.9",
                                 "--max-accuracy-drop", "1.5", "--per-channel-thresholds"])
    assert (args.target_sparsity, args.max_accuracy_drop, args.per_channel_thresholds) == \
        (0.9, 1.5, True)
    defaults = _parser().parse_args(["export", "m", "--input-shape", "1,4", "--out", "o"])
    assert (defaults.target_sparsity, defaults.max_accuracy_drop) == (None, 0.5)
    seen = {}

    def fake_export(model, example, out, **kwargs):
        seen.update(kwargs)
        raise ExportError("stop here")

    monkeypatch.setattr("exporters.bundle.export", fake_export)
    monkeypatch.setattr("exporters.spec.load_model", lambda spec: nn.Linear(4, 2))
    with pytest.raises(ExportError, match="stop here"):
        args.func(args)
    assert (seen["target_sparsity"], seen["max_accuracy_drop"],
            seen["per_channel_thresholds"]) == (0.9, 1.5, True)
