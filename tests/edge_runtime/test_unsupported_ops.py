"""The unsupported-model error: one error naming every missing op, with counts and first nodes."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import edge_runtime
from edge_runtime import InferenceSession, UnsupportedOpError
from edge_runtime.ops import registry


def _model(nodes: list, opsets: list) -> bytes:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]).SerializeToString()


def test_error_lists_every_missing_op_with_counts_and_first_node():
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["a"], name="relu"),
             n("DynamicQuantizeLSTM", ["a"], ["b"], name="dq_lstm_0", domain="com.microsoft"),
             n("Frobnicate", ["b"], ["c"], name="frob_0", domain="com.example"),
             n("Frobnicate", ["c"], ["d"], name="frob_1", domain="com.example"),
             n("Frobnicate", ["d"], ["e"], name="frob_2", domain="com.example"),
             n("StringNormalizer", ["e"], ["f"], name="strnorm"),
             n("Relu", ["f"], ["y"], name="relu_out")]
    model = _model(nodes, [("", 17), ("com.microsoft", 1), ("com.example", 3)])
    with pytest.raises(UnsupportedOpError) as info:
        InferenceSession(model)
    msg = str(info.value)
    assert "\n" not in msg
    assert "3 operators" in msg
    assert "com.microsoft::DynamicQuantizeLSTM" in msg and "1 node, first 'dq_lstm_0'" in msg
    assert "com.example::Frobnicate" in msg and "3 nodes, first 'frob_0'" in msg
    assert "StringNormalizer" in msg and "first 'strnorm'" in msg
    assert "edge_runtime.supported_ops()" in msg
    assert "opset" in msg and "re-export" not in msg.lower()  # no advice that cannot help
    assert "Relu (" not in msg and "Conv" not in msg          # the supported list is not dumped


def test_too_old_version_suggests_the_opset_that_works():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [("", 1)])
    with pytest.raises(UnsupportedOpError, match=r"Relu \(opset 1 .*re-export with opset >= 6; 1 node, first 'r'\)"):
        InferenceSession(model)


def test_find_missing_and_supported_ops_agree():
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["a"], name="r"), n("Frobnicate", ["a"], ["y"], name="f", domain="com.example")]
    missing = registry.find_missing(nodes, lambda d: 17 if d == "" else 1)
    assert [(m.domain, m.op_type, m.count, m.first_node) for m in missing] == [("com.example", "Frobnicate", 1, "f")]
    assert ("", "Relu") in edge_runtime.supported_ops() and ("com.example", "Frobnicate") not in edge_runtime.supported_ops()
    sess = InferenceSession(_model([nodes[0], n("Identity", ["a"], ["y"])], [("", 17)]))
    np.testing.assert_array_equal(sess.run(None, {"x": np.ones((1, 4), np.float32)})[0], np.ones((1, 4), np.float32))


def test_detection_and_sampling_ops_are_supported_and_never_reported_missing():
    n = helper.make_node
    added = ["RoiAlign", "GridSample", "AffineGrid", "MaxUnpool", "Hardmax", "Compress", "ReverseSequence"]
    assert {("", op) for op in added} <= edge_runtime.supported_ops()
    nodes = [n(op, ["x"], [f"y{i}"], name=f"{op}_0") for i, op in enumerate(added)]
    assert registry.find_missing(nodes, lambda d: 20) == []
    assert registry.resolve("", "GridSample", 16)[0].fn.__name__ == "GridSample_16"
    assert registry.resolve("", "RoiAlign", 22)[0].fn.__name__ == "RoiAlign"
    missing = registry.find_missing([n("RoiAlign", ["x"], ["y"], name="roi")], lambda d: 9)
    assert [(m.op_type, m.count, m.first_node) for m in missing] == [("RoiAlign", 1, "roi")]
    assert "re-export with opset >= 10" in missing[0].reason
