"""export(..., quantize="int8"): the int8 model in the bundle, its golden outputs, annotation,
validation and profiling per backend, inspect, and the CLI flag."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from edge_runtime.annotations import read_annotations  # noqa: E402
from edge_runtime.bundle import check_bundle, load_bundle  # noqa: E402
from edge_runtime.contract import Manifest  # noqa: E402
from edge_runtime.errors import BundleError  # noqa: E402
from edge_runtime.golden import load_golden  # noqa: E402
from edge_runtime.inspect import inspect_path, render  # noqa: E402
from edge_runtime.trust import TrustPolicy  # noqa: E402
from edge_runtime.validation import validate_bundle  # noqa: E402
from exporters import export  # noqa: E402
from exporters.errors import ExportError  # noqa: E402
from tests.exporters import test_quantize  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEV = TrustPolicy((), allow_unsigned=True)


def _net() -> torch.nn.Module:
    return test_quantize._net(width=16)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = tmp_path_factory.mktemp("int8") / "b"
    pre = {"input_size": [16, 16], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channel_order": "RGB",
           "layout": "NCHW"}
    return export(_net(), x[:1], out, calibration=x, formats=["onnx"], labels=["a", "b", "c"], quantize="int8",
                  preprocessing=pre)


def test_manifest_lists_the_int8_model_and_its_golden_outputs(bundle):
    section = bundle.manifest["int8"]
    assert section["model"] == "model.int8.onnx" and section["golden"] == "golden.int8.npz"
    assert {"model.int8.onnx", "golden.int8.npz"} <= set(bundle.manifest["files"])
    assert section["calibration_samples"] == 64 and section["op_counts"]["QuantizeLinear"] >= 3
    loaded = load_bundle(bundle.path, trust=DEV)
    assert loaded.int8_path == bundle.path / "model.int8.onnx" and loaded.spec.int8.golden_atol > 0
    # golden.int8.npz holds onnxruntime's outputs of the int8 model on golden.npz's inputs
    gold, gold32 = load_golden(loaded.int8_golden_path), load_golden(loaded.golden_path)
    np.testing.assert_array_equal(gold.x, gold32.x)
    sess = ort.InferenceSession(str(loaded.int8_path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {sess.get_inputs()[0].name: gold.x})[0], gold.ys[0])
    assert 0 < np.abs(gold.ys[0] - gold32.ys[0]).max() < 0.1  # quantized, but close to PyTorch


def test_int8_annotation_carries_fp32_densities_and_zero_points(bundle):
    fp32 = {layer["module"]: layer for layer in read_annotations(onnx.load(bundle.path / "model.onnx"))["layers"]}
    int8 = read_annotations(onnx.load(bundle.path / "model.int8.onnx"))
    names = {n.output[0]: n for n in onnx.load(bundle.path / "model.int8.onnx").graph.node}
    assert len(int8["layers"]) == len(fp32) == 3
    for layer in int8["layers"]:
        assert layer["density"] == fp32[layer["module"]]["density"]
        assert names[layer["input"]].op_type == "DequantizeLinear"  # the int8 graph's own input name
    relu_fed = [layer for layer in int8["layers"] if layer["relu_fed"]]
    assert relu_fed and all(layer["zero_point"] == 0 and layer["activation_dtype"] == "uint8" for layer in relu_fed)


def test_validate_checks_int8_backends_against_onnxruntime_int8(bundle):
    report = validate_bundle(bundle.path, progress=False, trust=DEV)
    checks = {g.backend: g for g in report.golden}
    assert {"edge-int8", "edge-numba-int8", "onnxruntime-int8"} <= set(checks), report.skipped
    assert report.passed, report.failures
    assert checks["edge-numba-int8"].atol == bundle.manifest["int8"]["golden_atol"]
    assert checks["edge-numba-int8"].max_abs <= checks["edge-numba-int8"].atol


def test_validate_with_labels_reports_the_int8_drop(bundle, tmp_path):
    gold = load_golden(bundle.path / "golden.npz")
    rng = np.random.default_rng(0)
    x = np.concatenate([gold.x, rng.standard_normal((48, 3, 16, 16)).astype(np.float32)])
    y = _net()(torch.from_numpy(x)).argmax(1).numpy()  # fp32 is right by construction
    np.savez(tmp_path / "data.npz", x=x, y=y)
    report = validate_bundle(bundle.path, data=tmp_path / "data.npz", backends=["onnxruntime", "edge-numba-int8"],
                             progress=False, trust=DEV, max_accuracy_drop=100)
    acc = {a.backend: a for a in report.accuracy}
    assert report.reference == "onnxruntime" and acc["onnxruntime"].accuracy == 100.0
    assert acc["edge-numba-int8"].drop == pytest.approx(100.0 - acc["edge-numba-int8"].accuracy)
    assert acc["edge-numba-int8"].agreement >= 80.0


def test_a_tampered_int8_model_fails_the_integrity_check(bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle.path, copy)
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[-20] ^= 1
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    _, problems = check_bundle(copy, trust=DEV)
    assert [p.name for p in problems] == ["model.int8.onnx"]


def test_manifest_int8_must_name_listed_files(bundle):
    doc = json.loads((bundle.path / "manifest.json").read_text())
    doc["int8"]["model"] = "other.onnx"
    with pytest.raises(BundleError, match=r"int8.model='other.onnx' is invalid; expected a file listed in 'files'"):
        Manifest.from_json(doc)
    doc["int8"] = {**bundle.manifest["int8"], "golden_atol": float("nan")}
    with pytest.raises(BundleError, match="int8.golden_atol"):
        Manifest.from_json(doc)
    doc["int8"] = {**bundle.manifest["int8"], "model": "../model.onnx"}
    with pytest.raises(BundleError, match="plain file name"):
        Manifest.from_json(doc)


def test_inspect_shows_the_int8_model(bundle):
    info = inspect_path(bundle.path)
    assert info["int8"]["model"] == "model.int8.onnx" and info["int8"]["op_counts"]["DequantizeLinear"] > 0
    text = render(info)
    assert "int8 model model.int8.onnx:" in text and "zero point 0" in text


def test_profile_puts_int8_backends_beside_fp32(bundle):
    from edge_runtime.profiling import profile_model
    from edge_runtime.profiling.report import backend_table

    result = profile_model(bundle.path, runs=2, warmup=0, threads=1, progress=False)
    names = [b.backend for b in result.backends]
    assert names == ["edge", "edge-numba", "onnxruntime", "edge-int8", "edge-numba-int8", "onnxruntime-int8"]
    int8 = result.backend("edge-numba-int8")
    ort8 = result.backend("onnxruntime-int8").timing.p50_ms
    assert int8.ratio_p50_vs_onnxruntime == pytest.approx(int8.timing.p50_ms / ort8, rel=1e-6)
    assert "than onnxruntime-int8" in "\n".join(backend_table(result))


def test_quantize_needs_calibration_and_a_known_scheme(tmp_path):
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(ExportError, match="needs calibration data"):
        export(_net(), x[:1], tmp_path / "a", formats=["onnx"], quantize="int8")
    with pytest.raises(ExportError, match=r"quantize='fp16' is not supported; expected one of \['int8'\]"):
        export(_net(), x[:1], tmp_path / "b", calibration=x, formats=["onnx"], quantize="fp16")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_export_quantize_int8(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "edge_cli", "export", "tests.exporters.models:SmallCNN", "--input-shape",
            "1,3,32,32", "--formats", "onnx", "--quantize", "int8"]
    no_calib = subprocess.run([*base, "--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=600)
    assert no_calib.returncode == 2 and "--quantize int8" in no_calib.stderr and "--calib" in no_calib.stderr
    assert "Traceback" not in no_calib.stderr and not (tmp_path / "a").exists()
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))
    ok = subprocess.run([*base, "--out", str(tmp_path / "b"), "--calib", str(tmp_path / "calib.npy")],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "int8: model.int8.onnx" in ok.stdout and "golden.int8.npz" in ok.stdout
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["int8"]["calibration_samples"] == 16


def test_run_int8_classifies_images_with_the_int8_model(bundle, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from edge_runtime.errors import InvalidArgumentError
    from edge_runtime.validation.run import BundleRunner

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(paths[-1])
    runner = BundleRunner(bundle.path, trust=DEV, int8=True)
    x = np.stack([runner._load(p)[0] for p in paths])
    sess = ort.InferenceSession(str(bundle.path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1)
    assert [r.label for r in runner.run_files(paths)] == [["a", "b", "c"][k] for k in expected]
    plain = export(_net(), torch.zeros(1, 3, 16, 16), tmp_path / "fp32", formats=["onnx"],
                   preprocessing=load_bundle(bundle.path, trust=DEV).preprocessing)
    with pytest.raises(InvalidArgumentError, match="--int8: bundle .* has no int8 model; re-export it with --quantize"):
        BundleRunner(plain.path, trust=DEV, int8=True)
