"""passes.fuse_qdq: DequantizeLinear -> MatMul -> QuantizeLinear becomes QLinearMatMul (onnxruntime's result).

The model is what onnxruntime's static quantizer writes for a Transformer MLP block: torch Linear layers on
(1, tokens, dim) inputs export as MatMul + Add, and the quantizer puts QDQ pairs around both (the bias Add is
quantized on its own).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.ops import quant_sparse
from tests.edge_runtime.test_fuse_qdq import _ops

ort = pytest.importorskip("onnxruntime")
quant = pytest.importorskip("onnxruntime.quantization")
torch = pytest.importorskip("torch")

TOKENS, DIM, HIDDEN = 16, 64, 256
EP = ["EdgeRuntimeExecutionProvider"]


def _tokens(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, TOKENS, DIM)).astype(np.float32)


class _Reader(quant.CalibrationDataReader):
    def __init__(self) -> None:
        self._it = iter([{"x": _tokens(i)} for i in range(8)])

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module", params=[("relu", True), ("relu", False), ("gelu", True), ("gelu", False)],
                ids=lambda p: f"{p[0]}-per_channel{int(p[1])}")
def mlp(request, tmp_path_factory) -> str:
    """Linear -> ReLU/GELU -> Linear on (1, 16, 64) tokens, quantized QDQ (uint8 activations, int8 weights)."""
    act, per_channel = request.param
    return _quantized_mlp(tmp_path_factory.mktemp(f"qdq_mlp_{act}_{int(per_channel)}"), act, per_channel, seed=0)


def _quantized_mlp(d, act: str, per_channel: bool, seed: int) -> str:
    """Linear -> act -> Linear exported by torch and quantized QDQ into ``d``; returns the model's path."""
    torch.manual_seed(seed)
    block = torch.nn.Sequential(torch.nn.Linear(DIM, HIDDEN), torch.nn.ReLU() if act == "relu" else torch.nn.GELU(),
                                torch.nn.Linear(HIDDEN, DIM)).eval()
    fp32, path = str(d / "fp32.onnx"), str(d / "qdq.onnx")
    torch.onnx.export(block, (torch.zeros(1, TOKENS, DIM),), fp32, opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    quant.quantize_static(fp32, path, _Reader(), quant_format=quant.QuantFormat.QDQ, per_channel=per_channel,
                          activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8)
    return path


def _ort(model: str | bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_the_quantizer_writes_qdq_matmuls_with_a_separately_quantized_bias_add(mlp: str):
    model = onnx.load(mlp)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == 2 and ops.count("Add") >= 2 and "Gemm" not in ops
    fused = _ops(model)
    assert fused.count("QLinearMatMul") == 2 and "MatMul" not in fused


def test_the_block_equals_onnxruntime_int8(mlp: str):
    sess, ref = edge_runtime.InferenceSession(mlp, providers=EP), _ort(mlp)
    assert [n.op_type for n in sess.plan.graph.nodes].count("QLinearMatMul") == 2
    for seed in (10, 11, 12):
        x = _tokens(seed)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0])


def test_the_quantized_matmul_outputs_equal_onnxruntime(mlp: str):
    """The two QLinearMatMul outputs (uint8, before the bias Add) made graph outputs: the same bytes."""
    model = onnx.load(mlp)
    names = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0].endswith(
        "MatMul_output_0")]
    assert len(names) == 2
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in names)
    data = model.SerializeToString()
    sess, ref = edge_runtime.InferenceSession(data, providers=EP), _ort(data)
    x = _tokens(20)
    got, want = sess.run(names, {"x": x}), ref.run(names, {"x": x})
    for g, w in zip(got, want):
        assert g.dtype == np.uint8
        np.testing.assert_array_equal(g, w)


def test_the_relu_fed_linear_runs_the_sparse_int8_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path_factory):
    calls: list[tuple[int, int, float]] = []
    kernel = quant_sparse.sparse_matmul_int8

    def spy(a, zp, prep, *rest):
        calls.append((a.shape[1], zp, float(np.mean(a != zp))))
        return kernel(a, zp, prep, *rest)

    monkeypatch.setattr(quant_sparse, "sparse_matmul_int8", spy)
    relu = _relu_mlp(tmp_path_factory)
    sess = edge_runtime.InferenceSession(relu, providers=EP)
    x = _tokens(30)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], _ort(relu).run(None, {"x": x})[0])
    second = [c for c in calls if c[0] == HIDDEN]  # the session's warm-up runs call it too
    assert second and all(zp == 0 for _, zp, _ in second)  # ReLU's output quantized with zero point 0 ...
    assert second[-1][2] < 0.75                             # ... so the inactive neurons are skipped


def _relu_mlp(tmp_path_factory) -> str:
    return _quantized_mlp(tmp_path_factory.mktemp("relu_mlp"), "relu", per_channel=True, seed=1)


RNG = np.random.default_rng(0)
K, N = 32, 8


def _qdq_matmul(*, w_zp: int = 0, const_weight: bool = True, second_reader: bool = False, y_zp_type=np.uint8,
                shared_dq: bool = False) -> onnx.ModelProto:
    """x -> Q -> DQ -> MatMul(DQ(W int8 per column)) -> Q -> DQ -> y, on (1, 5, K) tokens."""
    inits = [numpy_helper.from_array(v, name) for v, name in (
        (np.float32(0.02), "xs"), (np.uint8(128), "xzp"), (RNG.uniform(0.002, 0.01, N).astype(np.float32), "ws"),
        (np.full(N, w_zp, np.int8), "wzp"), (np.float32(0.05), "ys"), (y_zp_type(3), "yzp"))]
    if const_weight:
        inits.append(numpy_helper.from_array(RNG.integers(-127, 128, (K, N)).astype(np.int8), "wq"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, K])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["m"], name="mm"),
             helper.make_node("QuantizeLinear", ["m", "ys", "yzp"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "ys", "yzp"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if not const_weight:
        inputs.append(helper.make_tensor_value_info("wq", TensorProto.INT8, [K, N]))
    if second_reader:
        nodes.append(helper.make_node("Relu", ["m"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    if shared_dq:  # a second MatMul reads the same activation and weight DequantizeLinears
        nodes += [helper.make_node("MatMul", ["xd", "wd"], ["m2"], name="mm2"),
                  helper.make_node("QuantizeLinear", ["m2", "ys", "yzp"], ["m2q"]),
                  helper.make_node("DequantizeLinear", ["m2q", "ys", "yzp"], ["y2"])]
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "qdq_matmul", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_not_fused_when_the_pattern_does_not_hold():
    assert "QLinearMatMul" in _ops(_qdq_matmul())
    assert "QLinearMatMul" not in _ops(_qdq_matmul(const_weight=False))  # weight computed at run time
    assert "QLinearMatMul" not in _ops(_qdq_matmul(w_zp=3))              # asymmetric weights
    assert "QLinearMatMul" not in _ops(_qdq_matmul(second_reader=True))  # the float MatMul output is read
    assert "QLinearMatMul" not in _ops(_qdq_matmul(y_zp_type=np.int8))   # output type is not the input's


def test_dequantize_nodes_shared_by_two_matmuls_fuse_both():
    """onnxruntime gives each QDQ node group its own DequantizeLinear; here the DQs stay for other readers."""
    model = _qdq_matmul(shared_dq=True)
    assert _ops(model).count("QLinearMatMul") == 2
    x = RNG.standard_normal((1, 5, K)).astype(np.float32)
    data = model.SerializeToString()
    got = edge_runtime.InferenceSession(data, providers=EP).run(None, {"x": x})
    for g, w in zip(got, _ort(data).run(None, {"x": x})):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", ["second_reader", "w_zp"])
def test_unfused_patterns_still_run(kind):
    """Left alone, the float path runs; within one output step of onnxruntime (which fuses w_zp != 0 too)."""
    model = _qdq_matmul(**{kind: True if kind == "second_reader" else 3})
    x = RNG.standard_normal((1, 5, K)).astype(np.float32)
    data = model.SerializeToString()
    got = edge_runtime.InferenceSession(data, providers=EP).run(["y"], {"x": x})[0]
    assert np.abs(got - _ort(data).run(["y"], {"x": x})[0]).max() <= 0.05 * 1.001
