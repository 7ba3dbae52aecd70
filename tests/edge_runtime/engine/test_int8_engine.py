"""Quantized models on the onnxruntime engine: the numba engine (zero-skipping int8 kernels) runs
them when it is measured faster than onnxruntime's int8 session, else onnxruntime does."""
from __future__ import annotations

import numpy as np
import pytest

import edge_runtime
from edge_runtime.engine import hybrid, islands
from tests.edge_runtime.engine.test_hybrid import ORT, _opts

ort = pytest.importorskip("onnxruntime")
quant = pytest.importorskip("onnxruntime.quantization")
torch = pytest.importorskip("torch")

from tests.edge_runtime.test_quant_parity import _Net, _Reader, _batches, _output_scale  # noqa: E402


def _quantized(tmp_path_factory, fmt: str) -> str:
    """The test net quantized by onnxruntime's static quantizer in ``fmt`` (QOperator or QDQ), uint8 activations."""
    d = tmp_path_factory.mktemp(f"int8engine_{fmt}")
    torch.manual_seed(0)
    fp32 = str(d / "fp32.onnx")
    torch.onnx.export(_Net().eval(), torch.zeros(1, 3, 16, 16), fp32, opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    path = str(d / f"{fmt}_u8.onnx")
    quant.quantize_static(fp32, path, _Reader(), quant_format=getattr(quant.QuantFormat, fmt), per_channel=True,
                          activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8)
    return path


@pytest.fixture(scope="module")
def qop_u8(tmp_path_factory) -> str:
    return _quantized(tmp_path_factory, "QOperator")


def _priced(monkeypatch: pytest.MonkeyPatch, whole_s: float, numba_s: float) -> None:
    """The two engines' times as given; the density gate open (the test nets' inputs are dense)."""
    def prices(fns, threads, repeats=hybrid.REPEATS, warm_up=True, block=1):
        for fn in fns:
            fn()
        return [whole_s, numba_s]

    monkeypatch.setattr(hybrid, "_interleaved", prices)
    monkeypatch.setattr(hybrid, "INT8_MAX_DENSITY", 1.0)


def _untimed(*args, **kwargs):
    raise AssertionError("the engines were timed")


def _close_to_ort(path: str, sess: edge_runtime.InferenceSession) -> None:
    ref = ort.InferenceSession(path, providers=ORT)
    step = _output_scale(path)
    for x in _batches(3, 1):
        got, want = sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0]
        assert np.abs(got - want).max() <= step * 1.001 + 1e-6


def test_int8_layers_are_counted(qop_u8: str) -> None:
    import onnx

    assert islands.int8_layers(onnx.load(qop_u8)) >= 3


def _warm() -> dict[str, np.ndarray]:
    return {"x": _batches(1, 1)[0]}


def test_numba_engine_runs_a_quantized_model_when_faster(qop_u8: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _priced(monkeypatch, whole_s=1e-3, numba_s=0.5e-3)
    sess = edge_runtime.InferenceSession(qop_u8, _opts(), providers=ORT, warmup_feed=_warm())
    assert sess.dense_engine == "numba" and sess.get_providers() == ["EdgeRuntimeExecutionProvider"]
    assert "int8 layers with zero-skipping kernels" in sess.engine_report.outcome
    _close_to_ort(qop_u8, sess)


def test_onnxruntime_keeps_a_quantized_model_unless_clearly_faster(qop_u8: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _priced(monkeypatch, whole_s=1e-3, numba_s=0.97e-3)  # faster, but within MIN_PLAN_GAIN
    sess = edge_runtime.InferenceSession(qop_u8, _opts(), providers=ORT, warmup_feed=_warm())
    assert sess.get_providers() == ["CPUExecutionProvider"] and "whole kept" in sess.engine_report.outcome
    _close_to_ort(qop_u8, sess)


def test_without_a_warm_up_input_onnxruntime_keeps_a_quantized_model(qop_u8: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Both engines' int8 times depend on the data, so a synthetic input does not decide; nothing of
    the numba engine is built or timed."""
    monkeypatch.setattr(hybrid, "_interleaved", _untimed)
    sess = edge_runtime.InferenceSession(qop_u8, _opts(), providers=ORT)
    assert sess.get_providers() == ["CPUExecutionProvider"] and sess.dense_engine == "onnxruntime"
    assert "was not timed: no warm-up input (pass warmup_feed=" in sess.engine_report.outcome
    _close_to_ort(qop_u8, sess)


def test_a_dense_quantized_model_stays_on_onnxruntime_untimed(qop_u8: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its int8 layers' inputs are rarely at the zero point on the warm-up input (N(0, 1) into a
    random net): no zero-skipping gain to find, so the numba engine is neither built nor timed."""
    import onnx

    x = _warm()
    model = onnx.load(qop_u8)
    mean = hybrid._mean_int8_density(model.SerializeToString(), model, hybrid.EngineConfig(warmup_feeds=(x,)), [])
    assert hybrid.INT8_MAX_DENSITY < mean <= 1.0
    monkeypatch.setattr(hybrid, "_interleaved", _untimed)
    sess = edge_runtime.InferenceSession(qop_u8, _opts(), providers=ORT, warmup_feed=x)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert f"too dense on the warm-up input (density {mean:.2f} weighted by multiply-adds" in sess.engine_report.outcome
    _close_to_ort(qop_u8, sess)


def test_int8_input_densities_count_the_zero_point(qop_u8: str) -> None:
    """The probe reads each int8 layer's quantized input and counts values away from its zero point:
    an all-zero-point input (x = 0 quantizes to the zero point) has density 0 in the first layer."""
    import onnx

    model = onnx.load(qop_u8)
    acts = islands.int8_inputs(model)
    assert len(acts) >= 3 and all(a.elem_type == onnx.TensorProto.UINT8 for a in acts)
    cfg = hybrid.EngineConfig(warmup_feeds=({"x": np.zeros((1, 3, 16, 16), np.float32)},))
    values, = hybrid._probe(model.SerializeToString(), model, {a.name: a.elem_type for a in acts}, cfg, [])
    assert np.all(values[0] == acts[0].zero_point)
    assert hybrid._mean_int8_density(model.SerializeToString(), model, cfg, []) < 1.0


def test_force_and_off(qop_u8: str) -> None:
    forced = edge_runtime.InferenceSession(qop_u8, _opts(), providers=ORT, sparsity="force")
    assert forced.dense_engine == "numba"
    _close_to_ort(qop_u8, forced)
    off = edge_runtime.InferenceSession(qop_u8, _opts(), providers=ORT, sparsity="off")
    assert off.get_providers() == ["CPUExecutionProvider"] and off.engine_report.candidates == 0


@pytest.fixture(scope="module")
def qdq_u8(tmp_path_factory) -> str:
    return _quantized(tmp_path_factory, "QDQ")


def test_qdq_models_are_considered_for_the_numba_engine_too(qdq_u8: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    convs = sum(n.op_type == "Conv" for n in onnx.load(qdq_u8).graph.node)
    assert islands.int8_layers(onnx.load(qdq_u8)) == convs >= 3
    _priced(monkeypatch, whole_s=1e-3, numba_s=0.5e-3)
    sess = edge_runtime.InferenceSession(qdq_u8, _opts(), providers=ORT, warmup_feed=_warm())
    assert sess.dense_engine == "numba" and "QLinearConv" in [n.op_type for n in sess.plan.graph.nodes]
    _close_to_ort(qdq_u8, sess)


def test_qdq_transformer_mlps_are_considered_for_the_numba_engine(tmp_path_factory,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """QDQ MatMuls with int8 weights (a Transformer MLP's Linear layers) count as int8 layers too."""
    import onnx

    from tests.edge_runtime.test_fuse_qdq_matmul import _relu_mlp, _tokens

    path = _relu_mlp(tmp_path_factory)
    assert islands.int8_layers(onnx.load(path)) == 2
    _priced(monkeypatch, whole_s=1e-3, numba_s=0.5e-3)
    sess = edge_runtime.InferenceSession(path, _opts(), providers=ORT, warmup_feed={"x": _tokens(1)})
    assert sess.dense_engine == "numba" and "QLinearMatMul" in [n.op_type for n in sess.plan.graph.nodes]
    x = _tokens(3)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], ort.InferenceSession(path, providers=ORT).run(
        None, {"x": x})[0])


def test_int8_inputs_carry_each_layers_multiply_adds_per_input_value() -> None:
    """A stride-2 3x3 QLinearConv (6, 4) on (1, 4, 8, 8): 6*4*9 * 4*4 = 3456 multiply-adds for 256
    input values (13.5 each); the gate weights each layer's density by this."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.asarray(v, dt), n) for n, v, dt in (
        ("xs", 0.1, np.float32), ("xz", 3, np.uint8), ("ws", 0.02, np.float32), ("wz", 0, np.int8),
        ("ys", 0.2, np.float32), ("yz", 5, np.uint8))]
    consts.append(numpy_helper.from_array(np.ones((6, 4, 3, 3), np.int8), "w"))
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                            strides=[2, 2], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], consts)
    (inp,) = islands.int8_inputs(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert (inp.name, inp.elem_type, inp.zero_point) == ("x", onnx.TensorProto.UINT8, 3)
    assert inp.macs_per_value * 256 == 6 * 4 * 9 * 4 * 4


def test_a_depthwise_int8_conv_counts_its_own_channel_only() -> None:
    """group = C: each input value feeds KH*KW multiply-adds of its own channel (weight (C, 1, 3, 3))."""
    from onnx import helper, numpy_helper

    from edge_runtime.engine.islands import _macs_per_value

    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], group=8,
                            pads=[1, 1, 1, 1])
    assert _macs_per_value(node, numpy_helper.from_array(np.ones((8, 1, 3, 3), np.int8), "w")) == 9
