"""passes.fuse_lookup: a QLinearConv / quantized QGemm read only by a QuantizedLookup becomes QLinearConvLookup /
QGemmLookup, byte for byte the unfused graph's result; a conv read twice keeps its lookup."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.onnx_io import graph_from_model
from edge_runtime.passes import fuse_lookup, quantized_lookup

MS = "com.microsoft"


def _fatrelu(src: str, dtype, out: str) -> tuple[list, dict]:
    """DQ(src) -> FATReLU (x >= 0.1 ? x : 0) -> Q -> out."""
    nodes = [helper.make_node("DequantizeLinear", [src, "ys", "yzp"], [src + "_d"]),
             helper.make_node("GreaterOrEqual", [src + "_d", "t"], [src + "_ge"]),
             helper.make_node("Where", [src + "_ge", src + "_d", "zero"], [src + "_f"]),
             helper.make_node("QuantizeLinear", [src + "_f", "s2", "zp2"], [out])]
    zp2 = dtype(0 if dtype == np.uint8 else -128)
    return nodes, {"t": np.float32(0.1), "zero": np.float32(0.0), "s2": np.float32(0.02), "zp2": zp2}


def _model(op: str, dtype, channels: int, strides=(1, 1), two_readers: bool = False) -> onnx.ModelProto:
    """x (float) -> Q -> QLinearConv or QGemm -> FATReLU chain -> DQ -> y (and DQ(conv) -> y2 with two readers)."""
    rng = np.random.default_rng(channels)
    xzp = dtype(5 if dtype == np.uint8 else -3)
    consts = {"xs": np.float32(0.03), "xzp": xzp, "ys": np.float32(0.05), "yzp": dtype(7 if dtype == np.uint8 else 2)}
    if op == "conv":
        consts.update(w=rng.integers(-127, 128, (16, channels, 3, 3)).astype(np.int8),
                      ws=rng.uniform(0.005, 0.02, 16).astype(np.float32), wzp=np.zeros(16, np.int8),
                      b=rng.integers(-300, 300, 16).astype(np.int32))
        shape = [1, channels, 9, 9]
        core = helper.make_node("QLinearConv", ["q", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"], ["c"],
                                pads=[1, 1, 1, 1], strides=list(strides))
    else:
        consts.update(w=rng.integers(-127, 128, (24, channels)).astype(np.int8), ws=np.float32(0.01),
                      wzp=np.int8(0), b=rng.integers(-300, 300, 24).astype(np.int32))
        shape = [2, channels]
        core = helper.make_node("QGemm", ["q", "xs", "xzp", "w", "ws", "wzp", "b", "ys", "yzp"], ["c"], domain=MS,
                                transB=1)
    chain, more = _fatrelu("c", dtype, "l")
    consts.update(more)
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["q"]), core, *chain,
             helper.make_node("DequantizeLinear", ["l", "s2", "zp2"], ["y"])]
    outs = ["y"]
    if two_readers:
        nodes.append(helper.make_node("DequantizeLinear", ["c", "ys", "yzp"], ["y2"]))
        outs.append("y2")
    graph = helper.make_graph(nodes, "fl", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(MS, 1)],
                             ir_version=8)


def _ops(model: onnx.ModelProto) -> list[str]:
    graph, _ = quantized_lookup.run(graph_from_model(model))
    graph, _ = fuse_lookup.run(graph)
    return [n.op_type for n in graph.nodes]


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool) -> list[np.ndarray]:
    opts = edge_runtime.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = edge_runtime.ORT_DISABLE_ALL
    sess = edge_runtime.InferenceSession(model.SerializeToString(), opts, providers=["EdgeRuntimeExecutionProvider"])
    return sess.run(None, {"x": x})


def _input(model: onnx.ModelProto, seed: int) -> np.ndarray:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).uniform(-4, 4, shape).astype(np.float32)
    x[np.random.default_rng(seed + 1).random(shape) < 0.6] = 0  # zeros for the sparse kernel to skip
    return x


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("op,channels,strides", [("conv", 1, (1, 1)), ("conv", 3, (2, 2)), ("conv", 8, (1, 1)),
                                                 ("conv", 8, (2, 2)), ("gemm", 40, (1, 1))],
                         ids=["conv-dense", "conv-dense-s2", "conv-sparse", "conv-sparse-s2", "qgemm"])
def test_fused_equals_the_unfused_graph(op, channels, strides, dtype):
    model = _model(op, dtype, channels, strides)
    ops = _ops(model)
    assert ops.count("QLinearConvLookup" if op == "conv" else "QGemmLookup") == 1 and "QuantizedLookup" not in ops
    for seed in range(3):
        x = _input(model, seed)
        fused, plain = _run(model, x, True)[0], _run(model, x, False)[0]
        np.testing.assert_array_equal(fused, plain)


@pytest.mark.parametrize("op", ["conv", "gemm"])
def test_not_fused_when_the_output_has_two_readers(op):
    model = _model(op, np.uint8, 8, two_readers=True)
    ops = _ops(model)
    assert "QuantizedLookup" in ops and "QLinearConvLookup" not in ops and "QGemmLookup" not in ops
    x = _input(model, 0)
    for fused, plain in zip(_run(model, x, True), _run(model, x, False)):
        np.testing.assert_array_equal(fused, plain)


def test_a_qgemm_with_float_output_is_not_fused():
    model = _model("gemm", np.uint8, 40)
    graph, _ = quantized_lookup.run(graph_from_model(model))
    nodes = [n.replace(inputs=n.inputs[:7]) if n.op_type == "QGemm" else n for n in graph.nodes]  # no y_scale
    _, changed = fuse_lookup.run(graph.replace(nodes=tuple(nodes)))
    assert not changed
