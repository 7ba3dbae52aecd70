"""Quantized CNNs from onnxruntime.quantization run in edge_runtime and match onnxruntime.

A small torch CNN (Conv+ReLU, residual Add, Concat, LeakyRelu, Sigmoid*x, MaxPool,
GlobalAveragePool, Linear) is quantized three ways: quantize_static QDQ per-channel,
quantize_static QOperator (QLinearConv, com.microsoft QLinearAdd/QLinearConcat/QGemm/...),
and quantize_dynamic (DynamicQuantizeLinear + ConvInteger + MatMulInteger). Every integer
tensor of the graph must be within one quantization step of onnxruntime's, and the float
output within one step of the output's scale.
"""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
quant = pytest.importorskip("onnxruntime.quantization")

import edge_runtime  # noqa: E402


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        conv = torch.nn.Conv2d
        self.c1, self.c2 = conv(3, 8, 3, padding=1), conv(8, 8, 3, padding=1)
        self.c3, self.c4 = conv(16, 16, 3, stride=2, padding=1), conv(16, 16, 1)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        x = torch.cat([a + b, b], 1)
        x = torch.nn.functional.leaky_relu(self.c3(x), 0.1)
        x = torch.sigmoid(x) * x
        x = torch.nn.functional.max_pool2d(torch.relu(self.c4(x)), 2)
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def _batches(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(n)]


class _Reader(quant.CalibrationDataReader):
    def __init__(self) -> None:
        self._it = iter([{"x": b} for b in _batches(4, 0)])

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("quant")
    torch.manual_seed(0)
    fp32 = str(d / "fp32.onnx")
    torch.onnx.export(_Net().eval(), torch.zeros(1, 3, 16, 16), fp32, opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    out = {"fp32": fp32}
    for name, fmt, act in [("qdq", quant.QuantFormat.QDQ, quant.QuantType.QInt8),
                           ("qop_s8", quant.QuantFormat.QOperator, quant.QuantType.QInt8),
                           ("qop_u8", quant.QuantFormat.QOperator, quant.QuantType.QUInt8)]:
        out[name] = str(d / f"{name}.onnx")
        quant.quantize_static(fp32, out[name], _Reader(), quant_format=fmt, per_channel=True,
                              activation_type=act, weight_type=quant.QuantType.QInt8)
    out["dynamic"] = str(d / "dynamic.onnx")
    quant.quantize_dynamic(fp32, out["dynamic"])
    return out


def _all_outputs(path: str) -> onnx.ModelProto:
    """The model with every node output exposed as an (untyped) graph output."""
    model = onnx.load(path)
    del model.graph.output[:]
    for node in model.graph.node:
        if node.op_type != "Constant":
            model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in node.output)
    return model


def _output_scale(path: str) -> float:
    model = onnx.load(path)
    last = model.graph.node[-1]
    assert last.op_type == "DequantizeLinear", last.op_type
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return float(inits[last.input[1]])


def _reference(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _compare(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    names = [o.name for o in model.graph.output]
    ref = _reference(model).run(None, {"x": x})
    got = edge_runtime.InferenceSession(model).run(None, {"x": x})
    worst: dict[str, float] = {}
    for name, r, g in zip(names, ref, got):
        assert g.dtype == r.dtype and g.shape == r.shape, (name, g.dtype, r.dtype, g.shape, r.shape)
        worst[name] = float(np.abs(r.astype(np.float64) - g.astype(np.float64)).max()) if r.size else 0.0
    return worst


@pytest.mark.parametrize("name", ["qdq", "qop_s8", "qop_u8"])
def test_static_quantized_within_one_step(models, name):
    model = _all_outputs(models[name])
    integer = {o.name for o in _reference(model).get_outputs() if o.type in ("tensor(int8)", "tensor(uint8)")}
    assert len(integer) >= 10
    step = _output_scale(models[name])
    for x in _batches(3, 1):
        worst = _compare(model, x)
        bad = {n: d for n, d in worst.items() if n in integer and d > 1}
        assert not bad, f"integer tensors off by more than one step: {bad}"
        assert worst["y"] <= step * 1.001 + 1e-6


def test_qoperator_uses_the_contrib_ops(models):
    ops = collections.Counter((n.domain, n.op_type) for n in onnx.load(models["qop_u8"]).graph.node)
    for op in ["QLinearAdd", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearMul",
               "QLinearGlobalAveragePool", "QGemm"]:
        assert ops[("com.microsoft", op)] >= 1, (op, ops)
    assert ops[("", "QLinearConv")] == 4


def test_dynamic_quantized_matches(models):
    ops = {n.op_type for n in onnx.load(models["dynamic"]).graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops
    model = _all_outputs(models["dynamic"])
    for x in _batches(3, 2):
        worst = _compare(model, x)
        assert max(worst.values()) <= 1e-4, worst


def _single(op: str, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], out: str = "y",
            domain: str = "", n_out: int = 1, **attrs) -> onnx.ModelProto:
    from onnx import helper

    names = list(inputs) + list(inits)
    outs = [out] + [f"{out}{i}" for i in range(1, n_out)]
    node = helper.make_node(op, names, outs, domain=domain, **attrs)
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                     for n, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [onnx.numpy_helper.from_array(v, n) for n, v in inits.items()])
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def _same_as_ort(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> None:
    ref = _reference(model).run(None, feed)
    got = edge_runtime.InferenceSession(model).run(None, feed)
    for r, g in zip(ref, got):
        assert r.dtype == g.dtype and r.shape == g.shape
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_rounds_half_to_even_and_saturates_like_ort(dtype, per_axis):
    rng = np.random.default_rng(3)
    x = (rng.integers(-600, 600, (2, 4, 5)) / 2).astype(np.float32)  # many exact .5 ties, many out of range
    scale = np.array([0.5, 1.0, 2.0, 0.25], np.float32) if per_axis else np.array(1.0, np.float32)
    zp = np.array([3, 0, 7, 1] if per_axis else 5, dtype)
    quantize = _single("QuantizeLinear", {"x": x}, {"s": scale, "zp": zp}, axis=1)
    _same_as_ort(quantize, {"x": x})
    q = _reference(quantize).run(None, {"x": x})[0]
    _same_as_ort(_single("DequantizeLinear", {"q": q}, {"s": scale, "zp": zp}, axis=1), {"q": q})


@pytest.mark.parametrize("with_zp", [True, False])
def test_constant_per_tensor_quantize_equals_the_op_with_nan_and_without_zero_point(with_zp):
    """The plan-time Q/DQ builders (constant scale and zero point) give the op's bytes; a NaN falls back to it."""
    from edge_runtime.ops.quantize import DequantizeLinear, QuantizeLinear

    x = np.array([[0.0, 1.5, -2.5, np.nan, 1e9, -1e9, 0.75, 3.0]], np.float32)
    inits = {"s": np.array(0.5, np.float32)} | ({"zp": np.array(9, np.uint8)} if with_zp else {})
    numba = ["EdgeRuntimeExecutionProvider"]
    model = _single("QuantizeLinear", {"x": x}, inits)
    got = edge_runtime.InferenceSession(model, providers=numba).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, QuantizeLinear(x, *inits.values()))
    clean = np.nan_to_num(x)
    assert edge_runtime.InferenceSession(model, providers=numba).run(None, {"x": clean})[0].dtype == np.uint8
    _same_as_ort(model, {"x": clean})
    q = QuantizeLinear(clean, *inits.values())
    dq = _single("DequantizeLinear", {"q": q}, inits)
    np.testing.assert_array_equal(edge_runtime.InferenceSession(dq, providers=numba).run(None, {"q": q})[0],
                                  DequantizeLinear(q, *inits.values()))
    _same_as_ort(dq, {"q": q})


@pytest.mark.parametrize("x", [np.zeros((3, 4), np.float32), np.full((2, 2), 5.0, np.float32),
                               np.linspace(-3, 1, 24, dtype=np.float32).reshape(4, 6)])
def test_dynamic_quantize_matches_ort_including_all_zero_input(x):
    _same_as_ort(_single("DynamicQuantizeLinear", {"x": x}, {}, n_out=3), {"x": x})


def test_qgemm_float_output_and_per_column_scale_match_ort():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    b = rng.integers(-128, 128, (5, 8), dtype=np.int8)
    inits = {"as": np.array(0.02, np.float32), "az": np.array(128, np.uint8), "b": b,
             "bs": rng.uniform(0.01, 0.05, 5).astype(np.float32), "bz": np.zeros(5, np.int8),
             "c": rng.integers(-500, 500, 5).astype(np.int32)}
    model = _single("QGemm", {"a": a}, inits, domain="com.microsoft", transB=1)
    ref = _reference(model).run(None, {"a": a})[0]
    got = edge_runtime.InferenceSession(model).run(None, {"a": a})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
