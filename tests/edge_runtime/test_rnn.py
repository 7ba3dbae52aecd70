"""LSTM, GRU and RNN (ops/rnn.py) and LRN against onnxruntime, and torch exports against PyTorch.

Hand-built nodes cover every direction, both layouts, sequence_lens, initial states, peepholes,
clip, linear_before_reset and non-default activations; the torch exports are nn.LSTM / nn.GRU
(two layers, bidirectional, batch_first) as torch.onnx writes them.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(5)
T_MAX, BATCH, WIDTH, HIDDEN = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _rand(*shape: int, scale: float = 0.5) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _rnn_model(op: str, direction: str, layout: int, seq_lens: bool, init: bool, **attrs) -> tuple[bytes, dict]:
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    inits = [numpy_helper.from_array(_rand(dirs, g * HIDDEN, WIDTH), "W"),
             numpy_helper.from_array(_rand(dirs, g * HIDDEN, HIDDEN), "R"),
             numpy_helper.from_array(_rand(dirs, 2 * g * HIDDEN), "B")]
    x_shape = (BATCH, T_MAX, WIDTH) if layout else (T_MAX, BATCH, WIDTH)
    state_shape = (BATCH, dirs, HIDDEN) if layout else (dirs, BATCH, HIDDEN)
    feed = {"X": _rand(*x_shape, scale=1.0)}
    inputs = ["X", "W", "R", "B", "", ""]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if seq_lens:
        feed["L"] = np.array([T_MAX, 2, 4][:BATCH], np.int32)
        inputs[4] = "L"
        graph_inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [BATCH]))
    if init:
        inputs[5] = "H0"
        feed["H0"] = _rand(*state_shape)
        graph_inputs.append(helper.make_tensor_value_info("H0", TensorProto.FLOAT, state_shape))
        if op == "LSTM":
            inputs.append("C0")
            feed["C0"] = _rand(*state_shape)
            graph_inputs.append(helper.make_tensor_value_info("C0", TensorProto.FLOAT, state_shape))
    if op == "LSTM" and attrs.pop("peepholes", False):
        inputs += [""] * (7 - len(inputs)) + ["P"]
        inits.append(numpy_helper.from_array(_rand(dirs, 3 * HIDDEN), "P"))
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outs, direction=direction, hidden_size=HIDDEN, layout=layout, **attrs)
    graph = helper.make_graph([node], op, graph_inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                         for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString(), feed


def _compare(model: bytes, feed: dict, atol: float = 1e-5) -> None:
    ours = edge_runtime.InferenceSession(model).run(None, feed)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    for name, a, b in zip(("Y", "Y_h", "Y_c"), ours, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=name)


def _batchwise(model: bytes, feed: dict) -> tuple[bytes, dict]:
    """The same node with layout=1 (batch-major X, states and outputs) and the feed transposed."""
    m = onnx.load_from_string(model)
    node = m.graph.node[0]
    for a in node.attribute:
        if a.name == "layout":
            a.i = 1
    for vi in m.graph.input:
        if vi.name in ("X", "H0", "C0"):
            dims = vi.type.tensor_type.shape.dim
            dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
    return m.SerializeToString(), {k: v.transpose(1, 0, 2) if v.ndim == 3 else v for k, v in feed.items()}


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("seq_lens, init", [(False, False), (True, True)])
def test_recurrent_ops_match_onnxruntime(op, direction, seq_lens, init):
    model, feed = _rnn_model(op, direction, 0, seq_lens, init)
    _compare(model, feed)
    # layout 1: onnxruntime's CPU kernels refuse it, so compare with its layout-0 result transposed
    ours = edge_runtime.InferenceSession(_batchwise(model, feed)[0]).run(None, _batchwise(model, feed)[1])
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    np.testing.assert_allclose(ours[0], want[0].transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-5)
    for a, b in zip(ours[1:], want[1:]):
        np.testing.assert_allclose(a, b.transpose(1, 0, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, attrs", [
    ("LSTM", {"peepholes": True}),
    ("LSTM", {"clip": 0.7}),
    ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Softsign"] * 2, "activation_alpha": [0.3, 0.25],
              "activation_beta": [0.4, 0.6]}),
    ("GRU", {"linear_before_reset": 1}),
    ("GRU", {"clip": 0.5, "linear_before_reset": 1}),
    ("GRU", {"activations": ["Sigmoid", "Relu", "LeakyRelu", "Tanh"], "activation_alpha": [0.2]}),
    ("RNN", {"activations": ["Relu", "Tanh"]}),
])
def test_recurrent_attributes_match_onnxruntime(op, attrs):
    _compare(*_rnn_model(op, "bidirectional", 0, True, True, **attrs))


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_matches_onnxruntime(size):
    x = _rand(2, 7, 5, 5, scale=3.0)
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.01, beta=0.75, bias=2.0)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    _compare(model, {"x": x})


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_exports_match_torch_and_onnxruntime(kind, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rnn = getattr(torch.nn, kind)(WIDTH, HIDDEN, num_layers=2, bidirectional=True, batch_first=batch_first).eval()
    x = torch.randn((BATCH, T_MAX, WIDTH) if batch_first else (T_MAX, BATCH, WIDTH))
    buf = io.BytesIO()
    torch.onnx.export(rnn, (x,), buf, dynamo=False, opset_version=17, input_names=["x"])
    model = onnx.load_from_string(buf.getvalue())
    assert kind in {n.op_type for n in model.graph.node}
    feed = {"x": x.numpy()}
    ours = edge_runtime.InferenceSession(buf.getvalue()).run(None, feed)
    with torch.no_grad():
        want = rnn(x)[0].numpy()
    np.testing.assert_allclose(ours[0], want, rtol=1e-5, atol=2e-6)
    _compare(buf.getvalue(), feed)
