"""validate_bundle / `edge-runtime validate` on a faithful bundle and on three tampered ones."""
from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edge_runtime.bundle import load_bundle
from edge_runtime.errors import BundleError
from edge_runtime.profiling.backends import BackendUnavailableError
from edge_runtime.validation import commands, validate as validate_module
from edge_runtime.validation.validate import validate_bundle
from tests.edge_runtime.validation.conftest import LABELS, TRUE_PRE, edit_manifest


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_faithful_bundle_passes_with_data_reference_and_perturbation(bundle, image_dir, model):
    report = validate_bundle(bundle, data=image_dir, torch_model=model, perturb=("noise", "jpeg"), progress=False)
    assert report.passed, report.failures
    assert report.reference == "torch" and report.reference_accuracy == 100.0
    assert {g.backend for g in report.golden} >= {"torch", "edge", "edge-dense", "onnxruntime"}
    assert all(g.max_abs < 1e-3 and g.agreement == 100.0 for g in report.golden)
    edge = next(a for a in report.accuracy if a.backend == "edge")
    assert edge.accuracy == 100.0 and edge.agreement == 100.0 and edge.drop == 0.0
    assert report.defect_label == "defect" and edge.recall["defect"] == 100.0
    assert np.trace(np.array(edge.confusion)) == 3 * 6
    assert [(p.perturbation, p.severity) for p in report.perturbation] == \
        [("none", 0)] + [(n, s) for n in ("noise", "jpeg") for s in (1, 2, 3)]
    assert "torch" not in report.perturbation[0].accuracy and "edge-dense" in report.perturbation[0].accuracy
    assert [w for w in report.warnings if "NOT signed" not in w] == []  # only the unsigned-bundle warning


def test_cli_golden_only_exit_0_and_reports(bundle, tmp_path, capsys):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["validate", str(bundle), "--backends", "edge,edge-dense", "--json", str(out_json),
            "--report", str(out_md), "--no-progress"]
    assert _cli(argv) == 0
    doc = json.loads(out_json.read_text())
    assert doc["passed"] is True and [g["backend"] for g in doc["golden"]] == ["edge", "edge-dense"]
    assert "| edge | 12 |" in out_md.read_text()
    assert "PASSED" in capsys.readouterr().out
    with pytest.raises(Exception, match="already exists"):  # never overwrite a report unasked
        _cli(argv)
    assert _cli(argv + ["--overwrite"]) == 0


def test_weights_modified_after_export_fail_golden_comparison(bundle, tmp_path):
    proto = onnx.load(bundle / "model.onnx")
    weights = [i for i in proto.graph.initializer if numpy_helper.to_array(i).shape == (3, 6)]
    assert len(weights) == 1  # the fc weight
    changed = numpy_helper.to_array(weights[0]).copy()
    changed[0, 0] *= 1.2  # a 20% change of one weight
    weights[0].CopyFrom(numpy_helper.from_array(changed, weights[0].name))
    onnx.save(proto, bundle / "model.onnx")
    data = (bundle / "model.onnx").read_bytes()
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    files["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    edit_manifest(bundle, files=files)  # checksums now agree: only the golden outputs can tell

    report = validate_bundle(bundle, backends=("edge", "onnxruntime"), progress=False)
    assert not report.passed and not report.integrity
    assert all(not g.passed and g.max_abs > 0.1 for g in report.golden)
    assert any("golden.npz > atol" in f for f in report.failures)
    assert _cli(["validate", str(bundle), "--backends", "edge", "--no-progress"]) == 1


def test_wrong_mean_std_in_manifest_fails_on_image_folder(bundle, image_dir, model):
    edit_manifest(bundle, preprocessing={**TRUE_PRE, "mean": [0.2, 0.5, 0.8]})
    golden_only = validate_bundle(bundle, backends=("edge",), progress=False)
    assert golden_only.passed  # golden.npz holds preprocessed inputs: it cannot see this

    report = validate_bundle(bundle, data=image_dir, backends=("edge", "edge-dense"), torch_model=model,
                             reference_preprocessing=TRUE_PRE, progress=False)
    assert not report.passed and report.reference_accuracy == 100.0
    for check in (a for a in report.accuracy if a.backend != "torch"):
        assert check.drop > 50 and check.agreement < 50 and not check.passed
        assert check.recall["defect"] == 0.0  # defects are read as "ok": the case that matters
        assert check.worst and check.worst[0].prediction != check.worst[0].reference_prediction
    assert any("points below the reference torch" in f for f in report.failures)
    assert any("per-channel means" in w for w in report.warnings)  # the torch-free hint
    torchscript = bundle.parent / "model.pt"
    torch.jit.save(torch.jit.script(model), str(torchscript))
    assert _cli(["validate", str(bundle), "--data", str(image_dir), "--backends", "edge", "--no-progress",
                 "--torch-model", str(torchscript), "--reference-preprocessing", json.dumps(TRUE_PRE)]) == 1


def test_truncated_model_is_caught_by_checksum_before_running(bundle, monkeypatch, capsys):
    size = (bundle / "model.onnx").stat().st_size
    with open(bundle / "model.onnx", "r+b") as handle:
        handle.truncate(size // 2)
    expected = json.loads((bundle / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    actual = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()

    def never(*args, **kwargs):
        raise AssertionError("a backend was opened on a bundle that fails its checksums")

    monkeypatch.setattr(validate_module, "open_engines", never)
    report = validate_bundle(bundle, progress=False)
    assert not report.passed and not report.golden
    assert len(report.integrity) == 1 and "model.onnx" in report.integrity[0]
    assert expected in report.integrity[0] and actual in report.integrity[0]
    assert f"size {size // 2} bytes, expected {size}" in report.integrity[0]
    with pytest.raises(BundleError, match="model.onnx fails its checksum"):
        load_bundle(bundle)
    assert _cli(["validate", str(bundle), "--no-progress"]) == 1
    assert "re-export" in capsys.readouterr().out


def test_missing_backend_skipped_unless_named(bundle):
    (bundle / "model.tflite").unlink(missing_ok=True)
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    files.pop("model.tflite", None)
    edit_manifest(bundle, files=files)
    report = validate_bundle(bundle, progress=False)
    assert report.passed and "litert" in report.skipped and "model.tflite" in report.skipped["litert"]
    with pytest.raises(BackendUnavailableError, match="model.tflite"):
        validate_bundle(bundle, backends=("litert",), progress=False)
    with pytest.raises(BackendUnavailableError, match="torch_model"):
        validate_bundle(bundle, backends=("torch",), progress=False)


def test_npz_data_with_string_labels(bundle, tmp_path):
    golden = np.load(bundle / "golden.npz")
    y = np.array([LABELS[i] for i in golden["y"].argmax(1)])
    np.savez(tmp_path / "d.npz", x=golden["x"], y=y)
    report = validate_bundle(bundle, data=tmp_path / "d.npz", backends=("edge", "onnxruntime"), progress=False)
    assert report.passed and report.reference == "onnxruntime"
    assert all(a.accuracy == 100.0 for a in report.accuracy)


def test_nan_images_are_flagged_and_never_a_class(bundle, tmp_path, model):
    """A broken frame (all NaN after preprocessing) is reported and counted as wrong on every backend."""
    from tests.edge_runtime.validation.conftest import make_image, preprocess

    x = preprocess(np.stack([make_image(i % 3, seed=i) for i in range(6)]))
    x[2] = np.nan
    data = tmp_path / "data.npz"
    np.savez(data, x=x.astype(np.float32), y=np.arange(6) % 3)
    report = validate_bundle(bundle, data=data, backends=("edge", "onnxruntime"), progress=False)
    assert any("non-finite (NaN/inf) values after preprocessing" in w and "#2" in w for w in report.warnings)
    assert any(w.startswith("edge:") and "non-finite (NaN/inf) outputs" in w for w in report.warnings)
    for check in report.accuracy:  # the NaN image is wrong, the five others right
        assert check.accuracy == pytest.approx(100.0 * 5 / 6)
        assert np.array(check.confusion).sum() == 5
