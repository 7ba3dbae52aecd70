"""export(..., quantize="int8") with the tflite format: model.int8.tflite (ai-edge-quantizer), its golden
outputs, the manifest contract (Int8TfliteSpec), the litert-int8 backend in validate/profile/inspect, and
the one-line error when the quantizer is missing."""
from __future__ import annotations

import copy
import logging
import shutil
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("ai_edge_quantizer")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edge_runtime.bundle import check_bundle, load_bundle  # noqa: E402
from edge_runtime.contract import Int8TfliteSpec, Manifest  # noqa: E402
from edge_runtime.errors import BundleError  # noqa: E402
from edge_runtime.golden import load_golden  # noqa: E402
from edge_runtime.inspect import inspect_path, render  # noqa: E402
from edge_runtime.profiling import profile_model  # noqa: E402
from edge_runtime.profiling.backends import ModelFiles, dequantize_tensor, quantize_tensor  # noqa: E402
from edge_runtime.trust import TrustPolicy  # noqa: E402
from edge_runtime.validation import validate_bundle  # noqa: E402
from exporters import export  # noqa: E402
from exporters import tflite_int8  # noqa: E402
from exporters.errors import ExportError  # noqa: E402
from tests.exporters import test_quantize  # noqa: E402

pytestmark = pytest.mark.tflite
DEV = TrustPolicy((), allow_unsigned=True)


def _calibration() -> torch.Tensor:
    x = torch.randn(48, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x[7] *= 6.0  # one sample far outside the others: a moving average would shrink its range
    return x


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    x = _calibration()
    out = tmp_path_factory.mktemp("int8tfl") / "b"
    return export(test_quantize._net(width=16), x[:1], out, calibration=x, labels=["a", "b", "c"],
                  quantize="int8")


def test_manifest_lists_the_int8_tflite_model_and_its_golden_outputs(bundle):
    entry = bundle.manifest["int8"]["tflite"]
    assert entry["model"] == "model.int8.tflite" and entry["golden"] == "golden.int8.tflite.npz"
    assert {"model.int8.tflite", "golden.int8.tflite.npz"} <= set(bundle.manifest["files"])
    assert entry["calibration_samples"] == 48 and "static_wi8_ai8" in entry["quantizer"]
    loaded = load_bundle(bundle.path, trust=DEV)
    assert loaded.int8_tflite_path == bundle.path / "model.int8.tflite"
    assert loaded.spec.int8.tflite.golden_atol == entry["golden_atol"] > 0


def test_golden_holds_litert_outputs_within_8_output_steps_of_pytorch(bundle):
    interp = Interpreter(model_path=str(bundle.path / "model.int8.tflite"))
    interp.allocate_tensors()
    ins, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert ins["dtype"] == np.int8 and out["dtype"] == np.int8  # a fully int8 model
    gold = load_golden(bundle.path / "golden.int8.tflite.npz")
    np.testing.assert_array_equal(gold.x, load_golden(bundle.path / "golden.npz").x)
    interp.set_tensor(ins["index"], quantize_tensor(gold.x[:1], ins))
    interp.invoke()
    np.testing.assert_array_equal(dequantize_tensor(interp.get_tensor(out["index"]), out), gold.ys[0][:1])
    step = out["quantization"][0]
    assert bundle.manifest["int8"]["tflite"]["golden_atol"] == pytest.approx(8 * step, abs=1e-6)
    fp32 = load_golden(bundle.path / "golden.npz").ys[0]
    diff = np.abs(gold.ys[0] - fp32).max()
    assert 0 < diff < 8 * step and bundle.manifest["int8"]["tflite"]["max_abs_vs_fp32"] == pytest.approx(diff, abs=1e-6)


def test_calibration_uses_the_global_min_max_over_samples(bundle):
    """The input's int8 range covers the one outlier sample (a moving average would clip it)."""
    interp = Interpreter(model_path=str(bundle.path / "model.int8.tflite"))
    scale, zero_point = interp.get_input_details()[0]["quantization"]
    x = _calibration().numpy()
    assert scale * (127 - zero_point) >= x.max() - scale and scale * (-128 - zero_point) <= x.min() + scale


def test_contract_rejects_unlisted_misnamed_or_bad_entries(bundle):
    doc = bundle.manifest
    Manifest.from_json(doc)
    for mutate, key in ((lambda d: d["files"].pop("model.int8.tflite"), "int8.tflite.model"),
                        (lambda d: d["files"].pop("golden.int8.tflite.npz"), "int8.tflite.golden"),
                        (lambda d: d["int8"]["tflite"].update(model="../model.int8.tflite"), "files key"),
                        (lambda d: d["int8"]["tflite"].update(model="golden.npz"), "int8.tflite.model"),
                        (lambda d: d["int8"]["tflite"].update(golden_atol=-1), "int8.tflite.golden_atol"),
                        (lambda d: d["int8"].update(tflite=[]), "int8.tflite")):
        bad = copy.deepcopy(doc)
        mutate(bad)
        with pytest.raises(BundleError, match=key.replace(".", r"\.")):
            Manifest.from_json(bad)
    assert Int8TfliteSpec.from_json("m", doc["int8"]["tflite"], set(doc["files"])).model == "model.int8.tflite"


@pytest.mark.parametrize("name", ["model.int8.tflite", "golden.int8.tflite.npz"])
def test_tampered_or_missing_int8_tflite_files_fail_the_integrity_check(bundle, tmp_path, name):
    copy_dir = tmp_path / "b"
    shutil.copytree(bundle.path, copy_dir)
    data = bytearray((copy_dir / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy_dir / name).write_bytes(bytes(data))
    _, problems = check_bundle(copy_dir, trust=DEV)
    assert [p.name for p in problems] == [name]
    report = validate_bundle(copy_dir, progress=False, trust=DEV)
    assert not report.passed and any(name in f for f in report.integrity)
    (copy_dir / name).unlink()
    _, problems = check_bundle(copy_dir, trust=DEV)
    assert [p.name for p in problems] == [name]


def test_validate_checks_litert_int8_against_its_own_golden(bundle):
    report = validate_bundle(bundle.path, progress=False, trust=DEV)
    checks = {g.backend: g for g in report.golden}
    assert {"litert", "onnxruntime-int8", "litert-int8"} <= set(checks), report.skipped
    litert = checks["litert-int8"]
    assert litert.passed and litert.max_abs == 0.0  # same interpreter, same file as at export
    assert litert.atol == bundle.manifest["int8"]["tflite"]["golden_atol"]
    assert report.passed, report.failures


def test_validate_fails_litert_int8_beyond_its_tolerance(bundle, tmp_path, monkeypatch):
    """A changed model (here: outputs shifted by 9 steps in the reader) fails the golden check."""
    import edge_runtime.profiling.backends as bk

    step = bundle.manifest["int8"]["tflite"]["golden_atol"] / 8
    real = bk.dequantize_tensor
    monkeypatch.setattr(bk, "dequantize_tensor", lambda y, d: real(y, d) + (9 * step if y.dtype == np.int8 else 0))
    report = validate_bundle(bundle.path, backends=["litert-int8"], progress=False, trust=DEV)
    assert not report.passed and "golden.int8.tflite.npz" in report.failures[0]


def test_profile_measures_litert_int8_against_onnxruntime_int8(bundle):
    result = profile_model(bundle.path, backends=("onnxruntime-int8", "litert-int8"), runs=3, warmup=1,
                           progress=False, threads=1)
    rows = {b.backend: b for b in result.backends}
    assert set(rows) == {"onnxruntime-int8", "litert-int8"}, result.skipped
    assert rows["litert-int8"].timing.p50_ms > 0 and rows["litert-int8"].ratio_p50_vs_onnxruntime > 0


def test_litert_int8_is_added_only_when_the_bundle_has_an_int8_tflite(tmp_path):
    files = ModelFiles(tmp_path / "model.onnx", int8=tmp_path / "model.int8.onnx")
    assert "litert-int8" not in files.with_int8(("onnxruntime", "litert"))
    files = ModelFiles(tmp_path / "model.onnx", int8=tmp_path / "a", int8_tflite=tmp_path / "b")
    assert files.with_int8(("onnxruntime", "litert"))[2:] == ("onnxruntime-int8", "litert-int8")


def test_inspect_shows_the_int8_tflite_model(bundle):
    info = inspect_path(bundle.path)
    assert info["int8"]["tflite"]["backend"] == "litert-int8" and info["int8"]["tflite"]["bytes"] > 0
    assert "int8 TFLite model model.int8.tflite" in render(info)


def test_missing_quantizer_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_quantizer", None)  # import raises ImportError
    import exporters.bundle as eb

    monkeypatch.setattr(eb, "_fit", lambda *a, **k: pytest.fail("export started work"))
    x = _calibration()
    with pytest.raises(ExportError, match="ai-edge-quantizer") as err:
        export(test_quantize._net(), x[:1], tmp_path / "b", calibration=x, quantize="int8")
    assert "\n" not in str(err.value) and "pip install" in str(err.value)
    assert not (tmp_path / "b").exists()


def test_missing_quantizer_skips_the_int8_tflite_when_tflite_is_optional(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tflite_int8, "quantizer_error", lambda: "ai-edge-quantizer is not importable")
    x = _calibration()
    with caplog.at_level(logging.WARNING):
        b = export(test_quantize._net(), x[:1], tmp_path / "b", calibration=x, quantize="int8",
                   formats=["onnx", "tflite?"])
    assert "tflite" not in b.manifest["int8"] and "model.int8.tflite" not in b.manifest["files"]
    assert "model.tflite" in b.manifest["files"]
    assert any("Skipping the int8 TFLite" in r.getMessage() for r in caplog.records)


def test_quantize_and_dequantize_tensor_round_trip():
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    q = quantize_tensor(np.array([-100.0, -1.0, 0.0, 1.26, 200.0], np.float32), detail)
    np.testing.assert_array_equal(q, np.array([-128, -5, -3, -0, 127], np.int8))
    np.testing.assert_allclose(dequantize_tensor(q, detail), [-62.5, -1.0, 0.0, 1.5, 65.0])
    plain = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert quantize_tensor(np.ones(2), plain).dtype == np.float32


def test_max_abs_vs_fp32_reports_a_dropped_bias(tmp_path, caplog):
    """ai-edge-quantizer 0.10 drops the bias of an output channel whose weights are all zero: the
    manifest's max_abs_vs_fp32 is the real difference to PyTorch, and a large one is a warning."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    with torch.no_grad():
        net[0].weight[2] = 0.0
        net[0].bias[2] = 3.0
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.WARNING, logger="exporters.tflite_int8"):
        b = export(net, x[:1], tmp_path / "b", calibration=x, quantize="int8")
    fp32 = load_golden(b.path / "golden.npz").ys[0]
    int8 = load_golden(b.path / "golden.int8.tflite.npz").ys[0]
    diff = float(np.abs(int8 - fp32).max())
    assert b.manifest["int8"]["tflite"]["max_abs_vs_fp32"] == pytest.approx(diff, abs=1e-6)
    warned = any("drops the bias" in r.getMessage() for r in caplog.records)
    assert warned == (diff > tflite_int8.WARN_FRACTION * float(np.ptp(fp32)))
    if diff > 1.0:  # the 0.10 behaviour: channel 2 reads 0 instead of its bias 3
        assert np.abs(int8[:, 2]).max() < 0.1 and warned


def test_cli_export_without_the_quantizer_is_a_one_line_error_before_loading(tmp_path, monkeypatch, capsys):
    from edge_cli.main import main

    monkeypatch.setitem(sys.modules, "ai_edge_quantizer", None)
    # patch where it lives: exporters.load_model is a lazy re-export, and setting it on the package
    # would leave a real attribute behind that later tests' patches of exporters.spec could not reach
    monkeypatch.setattr("exporters.spec.load_model", lambda *a, **k: pytest.fail("loaded the model"))
    np.save(tmp_path / "calib.npy", np.zeros((4, 3, 16, 16), np.float32))
    code = main(["export", "tests.exporters.models:SmallCNN", "--input-shape", "1,3,16,16", "--calib",
                 str(tmp_path / "calib.npy"), "--quantize", "int8", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "ai-edge-quantizer" in err and "pip install" in err
    assert not (tmp_path / "b").exists()
