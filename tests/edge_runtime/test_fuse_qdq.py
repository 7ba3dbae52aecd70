"""passes.fuse_qdq: DequantizeLinear -> Conv -> QuantizeLinear becomes QLinearConv (onnxruntime's result)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.onnx_io import graph_from_model
from edge_runtime.passes import fuse_qdq

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)
X_SCALE, W_SCALE = np.float32(0.02), (RNG.uniform(0.002, 0.01, 8)).astype(np.float32)


def _qdq_conv(*, bias_scale: np.ndarray | None = None, w_zp: int = 0, second_reader: bool = False,
              group: int = 1, strides: tuple[int, int] = (1, 1)) -> onnx.ModelProto:
    """x (float) -> Q -> DQ -> Conv(DQ(W int8), DQ(b int32)) -> Q -> DQ -> y: what quantize_static writes."""
    w = RNG.integers(-127, 128, (8, 4 // group, 3, 3)).astype(np.int8)
    b = RNG.integers(-2000, 2000, 8).astype(np.int32)
    inits = [numpy_helper.from_array(v, n) for v, n in (
        (X_SCALE, "xs"), (np.uint8(0), "xzp"), (w, "wq"), (W_SCALE, "ws"), (np.full(8, w_zp, np.int8), "wzp"),
        (b, "bq"), (X_SCALE * W_SCALE if bias_scale is None else bias_scale, "bs"), (np.zeros(8, np.int32), "bzp"),
        (np.float32(0.05), "ys"), (np.uint8(128), "yzp"))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "bs", "bzp"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], name="conv", pads=[1, 1, 1, 1], group=group,
                              strides=list(strides)),
             helper.make_node("QuantizeLinear", ["c", "ys", "yzp"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yzp"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_reader:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _ops(model: onnx.ModelProto) -> list[str]:
    graph, _ = fuse_qdq.run(graph_from_model(model))
    return [n.op_type for n in graph.nodes]


@pytest.mark.parametrize("group, strides", [(1, (1, 1)), (1, (2, 2)), (2, (1, 1))])
def test_fused_conv_equals_onnxruntime_int8(group, strides):
    model = _qdq_conv(group=group, strides=strides)
    assert "QLinearConv" in _ops(model) and "Conv" not in _ops(model)
    x = RNG.standard_normal((1, 4, 9, 9)).astype(np.float32)
    x[x < 0.3] = 0  # mostly zeros: the sparse int8 kernel skips them (group 1)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    sess = edge_runtime.InferenceSession(model.SerializeToString(), providers=["EdgeRuntimeExecutionProvider"])
    assert "QLinearConv" in [n.op_type for n in sess.plan.graph.nodes]
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], ref)


def test_not_fused_when_the_pattern_does_not_hold():
    assert "QLinearConv" not in _ops(_qdq_conv(w_zp=3))                          # asymmetric weights
    assert "QLinearConv" not in _ops(_qdq_conv(second_reader=True))              # the float conv output is read
    assert "QLinearConv" not in _ops(_qdq_conv(bias_scale=X_SCALE * W_SCALE * 2))  # bias not at x_scale * w_scale


def test_the_int8_weights_are_not_also_kept_as_floats():
    model = _qdq_conv()
    sess = edge_runtime.InferenceSession(model.SerializeToString(), providers=["EdgeRuntimeExecutionProvider"])
    floats = [k for k, v in sess.plan.graph.initializers.items() if np.asarray(v).dtype == np.float32
              and np.asarray(v).size == 8 * 4 * 9]
    assert floats == []


def _qdq_gemm(*, quantized_output: bool, trans_b: int) -> onnx.ModelProto:
    """x -> Q -> DQ -> Gemm(DQ(W int8, per column), DQ(b int32)) [-> Q -> DQ] -> y."""
    k, n = 40, 6
    w = RNG.integers(-127, 128, (n, k) if trans_b else (k, n)).astype(np.int8)
    ws = RNG.uniform(0.002, 0.01, n).astype(np.float32)
    inits = [numpy_helper.from_array(v, name) for v, name in (
        (X_SCALE, "xs"), (np.uint8(0), "xzp"), (w, "wq"), (ws, "ws"), (np.zeros(n, np.int8), "wzp"),
        (RNG.integers(-500, 500, n).astype(np.int32), "bq"), (X_SCALE * ws, "bs"), (np.zeros(n, np.int32), "bzp"),
        (np.float32(0.05), "ys"), (np.uint8(100), "yzp"))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0 if trans_b else 1),
             helper.make_node("DequantizeLinear", ["bq", "bs", "bzp"], ["bd"], axis=0),
             helper.make_node("Gemm", ["xd", "wd", "bd"], ["g" if quantized_output else "y"], transB=trans_b)]
    if quantized_output:
        nodes += [helper.make_node("QuantizeLinear", ["g", "ys", "yzp"], ["gq"]),
                  helper.make_node("DequantizeLinear", ["gq", "ys", "yzp"], ["y"])]
    graph = helper.make_graph(nodes, "qdq_gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("quantized_output", [True, False])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_fused_gemm_equals_onnxruntime_int8(quantized_output, trans_b):
    model = _qdq_gemm(quantized_output=quantized_output, trans_b=trans_b)
    assert "QGemm" in _ops(model) and "Gemm" not in _ops(model)
    x = RNG.standard_normal((3, 40)).astype(np.float32)
    x[x < 0.5] = 0  # mostly at the zero point: skipped
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    sess = edge_runtime.InferenceSession(model.SerializeToString(), providers=["EdgeRuntimeExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    if quantized_output:
        np.testing.assert_array_equal(got, ref)
    else:  # float logits: the same int32 sums, scaled in float32
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_blocked_weight_quantization_keeps_the_float_path():
    model = _qdq_conv()
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "wq")
    dq.attribute.append(helper.make_attribute("block_size", 2))
    assert "QLinearConv" not in _ops(model)
