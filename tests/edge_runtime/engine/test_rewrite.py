"""FATReLU's exported ``Where(GreaterOrEqual(x, t), x, 0)`` runs as one ThresholdedRelu on the
onnxruntime engine (edge_runtime/engine/rewrite.py): bit-identical outputs, left alone wherever
the rewrite would not be exact; int8 FATReLUs (between DequantizeLinear and QuantizeLinear) too,
where onnxruntime's QLinearWhere is the slow form."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.engine.rewrite import fatrelu_to_thresholded_relu, threshold_below

ort = pytest.importorskip("onnxruntime")

T = 0.3  # not a float32: the rewrite must use the float32 the model holds


def _const(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _fatrelu_model(t=T, zero=0.0, *, extra_nodes=(), extra_outputs=(), extra_inits=(), swap=False,
                   opset: int = 17) -> onnx.ModelProto:
    """y = FATReLU_t(x) as torch exports it, x (2, 8) float32."""
    where_in = ["ge", "zero", "x"] if swap else ["ge", "x", "zero"]
    nodes = [helper.make_node("GreaterOrEqual", ["x", "t"], ["ge"], name="ge"),
             helper.make_node("Where", where_in, ["y"], name="fatrelu"), *extra_nodes]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), *extra_outputs]
    inits = [_const("t", t), _const("zero", zero), *extra_inits]
    graph = helper.make_graph(nodes, "fatrelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _edge_values() -> np.ndarray:
    t = np.float32(T)
    row = [t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(1)), np.nan, np.inf, -np.inf, -0.0, 0.0]
    return np.array([row, [5.0, -5.0, 0.1, 0.29999998, 0.30000001, 1e-40, -1e-40, 3.4e38]], dtype=np.float32)


def test_fatrelu_becomes_one_thresholded_relu_with_identical_outputs() -> None:
    model = _fatrelu_model()
    x = _edge_values()
    (want,) = _run(model, x)
    assert fatrelu_to_thresholded_relu(model) == 1
    assert [(n.op_type, n.name) for n in model.graph.node] == [("ThresholdedRelu", "fatrelu")]
    (got,) = _run(model, x)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_array_equal(got, want)  # NaN -> 0, x == t kept, the float below t dropped
    assert want[0, 0] == np.float32(T) and want[0, 1] == 0.0


def test_threshold_below_is_the_float32_just_under() -> None:
    t = np.float32(0.3)
    below = np.float32(threshold_below(float(t)))
    assert below < t and np.nextafter(below, np.float32(1)) == t


@pytest.mark.parametrize("case", ["per-channel t", "infinite t", "negative zero", "nonzero else",
                                  "swapped Where", "flag is an output", "flag read twice", "old opset"])
def test_left_alone_where_not_exact(case: str) -> None:
    flag_out = [helper.make_tensor_value_info("ge", TensorProto.BOOL, None)]
    model = {
        "per-channel t": lambda: _fatrelu_model(t=np.full(8, T)),
        "infinite t": lambda: _fatrelu_model(t=np.inf),
        "negative zero": lambda: _fatrelu_model(zero=-0.0),
        "nonzero else": lambda: _fatrelu_model(zero=1.0),
        "swapped Where": lambda: _fatrelu_model(swap=True),
        "flag is an output": lambda: _fatrelu_model(extra_outputs=flag_out),
        "flag read twice": lambda: _fatrelu_model(
            extra_nodes=[helper.make_node("Not", ["ge"], ["n"])],
            extra_outputs=[helper.make_tensor_value_info("n", TensorProto.BOOL, None)]),
        "old opset": lambda: _fatrelu_model(opset=9),
    }[case]()
    before = model.SerializeToString()
    assert fatrelu_to_thresholded_relu(model) == 0
    assert model.SerializeToString() == before


def _qdq_fatrelu_model() -> onnx.ModelProto:
    """uint8 x -> DequantizeLinear -> FATReLU(T) -> QuantizeLinear -> uint8 y: the int8 FATReLU of a QDQ model."""
    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["x"]),
             helper.make_node("GreaterOrEqual", ["x", "t"], ["ge"]), helper.make_node("Where", ["ge", "x", "zero"], ["f"]),
             helper.make_node("QuantizeLinear", ["f", "s", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("xq", TensorProto.UINT8, [2, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                              [_const("s", 0.05), _const("zp", 100, np.uint8), _const("t", T), _const("zero", 0.0)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("providers", [["CPUExecutionProvider"], ["EdgeRuntimeExecutionProvider"]])
def test_int8_fatrelu_is_rewritten_with_identical_bytes(providers: list[str]) -> None:
    """Between DequantizeLinear and QuantizeLinear: every one of the 256 input bytes gives the byte
    onnxruntime gives for the original graph (its QLinearWhere), on both engines."""
    model = _qdq_fatrelu_model()
    xq = np.arange(256, dtype=np.uint8).reshape(2, 128)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"xq": xq})[0]
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert fatrelu_to_thresholded_relu(rewritten) == 1
    assert [n.op_type for n in rewritten.graph.node] == ["DequantizeLinear", "ThresholdedRelu", "QuantizeLinear"]
    sess = edge_runtime.InferenceSession(model, providers=providers)
    np.testing.assert_array_equal(sess.run(None, {"xq": xq})[0], want)
    below = (np.arange(256) - 100).astype(np.float32) * np.float32(0.05) < np.float32(T)
    assert (want == 100).sum() == below.sum()  # below the threshold -> the zero point; the rest kept


def _mlp(hidden: int = 256) -> onnx.ModelProto:
    """x (1, 64) -> Gemm -> FATReLU(0.3) -> Gemm -> FATReLU(0.3) -> Clip(max 6) -> Gemm, as torch exports it."""
    rng = np.random.default_rng(0)
    w = [rng.standard_normal(s).astype(np.float32) * 0.2 for s in ((hidden, 64), (hidden, hidden), (10, hidden))]
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["g0"], transB=1),
             helper.make_node("GreaterOrEqual", ["g0", "t"], ["ge0"]),
             helper.make_node("Where", ["ge0", "g0", "zero"], ["f0"]),
             helper.make_node("Gemm", ["f0", "w1"], ["g1"], transB=1),
             helper.make_node("GreaterOrEqual", ["g1", "t"], ["ge1"]),
             helper.make_node("Where", ["ge1", "g1", "zero"], ["f1"]),
             helper.make_node("Clip", ["f1", "", "six"], ["c1"]),
             helper.make_node("Gemm", ["c1", "w2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, f"w{i}") for i, v in enumerate(w)]
                              + [_const("t", T), _const("zero", 0.0), _const("six", 6.0)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("sparsity", ["off", "auto", "force"])
def test_session_runs_fatrelu_as_thresholded_relu(sparsity: str, caplog: pytest.LogCaptureFixture) -> None:
    model = _mlp()
    mine = onnx.ModelProto()
    mine.CopyFrom(model)
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    (want,) = _run(model, x)
    with caplog.at_level(logging.DEBUG, logger="edge_runtime.engine.hybrid"):
        sess = edge_runtime.InferenceSession(mine, providers=["CPUExecutionProvider"], sparsity=sparsity)
    assert mine.SerializeToString() == model.SerializeToString()  # the caller's proto is not rewritten
    assert "2 FATReLU (GreaterOrEqual + Where) run as ThresholdedRelu" in caplog.text
    assert sess.engine_report.fatrelus_rewritten == 2  # what profile and the demo's report say
    (got,) = sess.run(None, {"x": x})
    if sparsity == "off":
        np.testing.assert_array_equal(got, want)
    else:  # a sparse island sums in another order
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_numba_fuses_thresholded_relu_as_fatrelu(numba_engine: None) -> None:
    """The numba engine folds ThresholdedRelu(alpha) into the layer as ``x >= next float above alpha``."""
    model = _mlp()
    fatrelu_to_thresholded_relu(model)
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    (want,) = _run(model, x)
    sess = edge_runtime.InferenceSession(model.SerializeToString(), sparsity="force")
    got, stats = sess.run_with_stats(None, {"x": x})
    assert "ThresholdedRelu" not in {s.op_type for s in stats.nodes}
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
