"""exporters.quantize: onnxruntime's static QDQ quantizer driven by calibration batches."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

from exporters.calibrate import calibrate  # noqa: E402
from exporters.errors import ExportError  # noqa: E402
from exporters.quantize import accuracy_drop, calibration_feeds, quantize_model  # noqa: E402


def _net(width: int = 8) -> torch.nn.Module:
    """Conv-BN-ReLU, Conv-ReLU, average pool, Linear to 3 classes; seeded."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(width, 3)).eval()


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "fp32.onnx"
    net = _net()
    torch.onnx.export(net, torch.zeros(2, 3, 12, 12), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    x = np.random.default_rng(0).standard_normal((20, 3, 12, 12)).astype(np.float32)
    return path, net, x


def test_qdq_per_channel_with_uint8_relu_outputs_at_zero_point_zero(fp32, tmp_path):
    path, _, x = fp32
    q = quantize_model(path, x, tmp_path / "int8.onnx")
    assert q.calibration_samples == 20 and q.path.exists()
    assert q.op_counts["QuantizeLinear"] >= 3 and q.op_counts["Conv"] == 2
    model = onnx.load(str(q.path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_scales = [inits[n.input[1]] for n in model.graph.node
                     if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                     and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim == 4]
    assert sorted(s.shape for s in weight_scales) == [(8,), (8,)]  # per output channel
    relu_out = [p for name, p in q.activations.items() if "Relu" in name]
    assert relu_out and all(p.zero_point == 0 and p.dtype == "uint8" for p in relu_out)


def test_int8_activations_and_calibration_from_a_sparsity_report(fp32, tmp_path):
    path, net, x = fp32
    report = calibrate(net, torch.from_numpy(x), keep_inputs=8)
    q = quantize_model(path, report, tmp_path / "int8.onnx", activation_type="int8", preprocess=False)
    assert q.calibration_samples == 8
    assert {p.dtype for p in q.activations.values()} == {"int8"}


def test_accuracy_drop_reports_both_models_on_labelled_data(fp32, tmp_path):
    path, net, x = fp32
    y = net(torch.from_numpy(x)).argmax(1).numpy()  # fp32 is right by construction
    q = quantize_model(path, x, tmp_path / "int8.onnx")
    for runner in ("onnxruntime", "edge_runtime"):
        r = accuracy_drop(path, q.path, x, y, batch=8, runner=runner)
        assert r["samples"] == 20 and r["fp32_accuracy"] == 100.0
        assert r["drop_points"] == pytest.approx(100.0 - r["int8_accuracy"])
        assert 0.0 < r["max_logit_error"] < 1.0


def test_feeds_follow_a_fixed_batch_and_stop_at_max_samples():
    x = np.zeros((10, 3), np.float32)
    feeds = calibration_feeds(x, "x", 4, max_samples=256)
    assert [f["x"].shape[0] for f in feeds] == [4, 4]
    assert [f["x"].shape[0] for f in calibration_feeds([x, x], "x", None, max_samples=15)] == [10, 5]
    assert [f["x"].shape[0] for f in calibration_feeds(np.zeros((70, 3), np.float32), "x", None)] == [32, 32, 6]
    assert [f["x"].shape[0] for f in calibration_feeds(np.zeros((70, 3), np.float32), "x", None, 40)] == [32, 8]
    assert calibration_feeds([{"x": x}], "x", None)[0]["x"].shape == (10, 3)


@pytest.mark.parametrize("kwargs,match", [({"activation_type": "int4"}, "activation_type='int4'"),
                                          ({"calibrate_method": "mse"}, "calibrate_method='mse'")])
def test_bad_options_are_one_line_errors(fp32, tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        quantize_model(fp32[0], fp32[2], tmp_path / "int8.onnx", **kwargs)


def test_no_calibration_data_is_an_error(fp32, tmp_path):
    with pytest.raises(ExportError, match="no calibration data"):
        quantize_model(fp32[0], [], tmp_path / "int8.onnx")
