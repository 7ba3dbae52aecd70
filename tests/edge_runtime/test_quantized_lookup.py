"""passes.quantized_lookup: DequantizeLinear -> element-wise -> QuantizeLinear becomes one 256-entry lookup,
byte for byte what the float chain computes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.onnx_io import graph_from_model
from edge_runtime.passes import quantized_lookup

ort = pytest.importorskip("onnxruntime")
SHAPE = [1, 4, 6, 6]


def _model(body: list, consts: dict, *, dtype=np.uint8, extra_outputs=()) -> onnx.ModelProto:
    """x (float) -> Q -> DQ (d) -> BODY (ends in f) -> Q -> DQ -> y."""
    elem = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    zp = dtype(3 if dtype == np.uint8 else -5)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in {
        "s": np.float32(0.05), "zp": zp, "s2": np.float32(0.03), "zp2": dtype(7), **consts}.items()]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"]), *body,
             helper.make_node("QuantizeLinear", ["f", "s2", "zp2"], ["fq"]),
             helper.make_node("DequantizeLinear", ["fq", "s2", "zp2"], ["y"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", *extra_outputs)]
    graph = helper.make_graph(nodes, "lut", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outs,
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert elem  # the zero points' dtype decides uint8/int8
    return model


FATRELU = ([helper.make_node("GreaterOrEqual", ["d", "t"], ["ge"]), helper.make_node("Where", ["ge", "d", "zero"], ["f"])],
           {"t": np.float32(0.4), "zero": np.float32(0.0)})
SILU = ([helper.make_node("Sigmoid", ["d"], ["sg"]), helper.make_node("Mul", ["d", "sg"], ["f"])], {})
HARDSWISH = ([helper.make_node("HardSwish", ["d"], ["f"])], {})
REQUANT = ([helper.make_node("Identity", ["d"], ["f"])], {})


def _ops(model: onnx.ModelProto) -> list[str]:
    graph, _ = quantized_lookup.run(graph_from_model(model))
    return [n.op_type for n in graph.nodes]


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool) -> np.ndarray:
    opts = edge_runtime.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = edge_runtime.ORT_DISABLE_ALL
    sess = edge_runtime.InferenceSession(model.SerializeToString(), opts, providers=["EdgeRuntimeExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("chain", [FATRELU, SILU, HARDSWISH, REQUANT], ids=["fatrelu", "silu", "hardswish", "requant"])
def test_lookup_equals_the_float_chain(chain, dtype):
    model = _model(*chain, dtype=dtype)
    ops = _ops(model)
    assert "QuantizedLookup" in ops and ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1
    x = np.random.default_rng(0).uniform(-8, 8, SHAPE).astype(np.float32)  # saturates at both ends too
    fused, plain = _run(model, x, True), _run(model, x, False)
    np.testing.assert_array_equal(fused, plain)
    if chain is not REQUANT:  # onnxruntime drops the DQ -> Identity -> Q pair altogether (not the graph's math)
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        assert np.abs(fused - ref).max() <= 0.03 + 1e-6  # onnxruntime: within one output step


def test_not_fused_when_the_chain_leaks_or_is_not_elementwise():
    body, consts = FATRELU
    assert "QuantizedLookup" not in _ops(_model(body, consts, extra_outputs=("ge",)))  # a chain value is an output
    per_channel = {**consts, "t": np.full((1, 4, 1, 1), 0.4, np.float32)}  # not one function of the byte
    assert "QuantizedLookup" not in _ops(_model(body, per_channel))
    softmax = [helper.make_node("Softmax", ["d"], ["f"], axis=1)]
    assert "QuantizedLookup" not in _ops(_model(softmax, {}))


def test_a_tail_of_layout_ops_moves_after_the_lookup():
    body, consts = FATRELU
    tail = [body[0], helper.make_node("Where", ["ge", "d", "zero"], ["w"]), helper.make_node("Flatten", ["w"], ["f"],
                                                                                             axis=1)]
    model = _model(tail, consts)
    ops = _ops(model)
    assert ops.count("QuantizedLookup") == 1 and "Where" not in ops and ops.index("Flatten") > ops.index(
        "QuantizedLookup")
    x = np.random.default_rng(1).uniform(-8, 8, SHAPE).astype(np.float32)
    fused, plain = _run(model, x, True), _run(model, x, False)
    assert fused.shape == (1, 4 * 6 * 6)
    np.testing.assert_array_equal(fused, plain)
    # an element-wise op after the layout op: not moved, not fused
    relu_after = [body[0], helper.make_node("Where", ["ge", "d", "zero"], ["w"]),
                  helper.make_node("Flatten", ["w"], ["fl"], axis=1), helper.make_node("Relu", ["fl"], ["f"])]
    assert "QuantizedLookup" not in _ops(_model(relu_after, consts))
