"""fold_bias_shifts: Conv/BN -> Sub/Add(constant) folded into the bias, exactly where it is the same graph."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from exporters.onnx_export import export_onnx, finalize
from exporters.onnx_fold import fold_bias_shifts
from exporters.sparsity import ShiftedReLU


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _net(per_channel: bool, bn: bool) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = 3
    for co in (8, 16):
        layers += [nn.Conv2d(c, co, 3, padding=1, bias=not bn)] + ([nn.BatchNorm2d(co)] if bn else [])
        act = ShiftedReLU(0.0, num_channels=co if per_channel else None, channel_dim=1)
        with torch.no_grad():
            act.threshold.copy_(torch.rand(act.threshold.shape) * 0.5)
        layers.append(act)
        c = co
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.running_mean, -0.5, 0.5)
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("per_channel, bn, dynamo", [(False, True, False), (True, False, False),
                                                     (False, True, True), (True, False, True)])
def test_shifted_relu_exports_as_conv_relu_with_the_same_outputs(per_channel, bn, dynamo):
    net = _net(per_channel, bn)
    x = torch.randn(2, 3, 12, 12)
    proto = finalize(export_onnx(net, x, dynamo=dynamo))
    ops = [n.op_type for n in proto.graph.node]
    assert "Sub" not in ops and ops.count("Relu") == 2, ops
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(_ort(proto, x.numpy()), ref, rtol=1e-4, atol=1e-5)


def _graph(nodes, inits, rank=4):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(rank)])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


W = np.arange(8, dtype=np.float32).reshape(4, 2, 1, 1) / 8
B = np.array([0.1, -0.2, 0.3, 0.0], np.float32)


@pytest.mark.parametrize("op, shift, first", [("Sub", np.float32(0.25), False),
                                              ("Add", np.array([1, 2, 3, 4], np.float32).reshape(4, 1, 1), True),
                                              ("Sub", np.array([1, 2, 3, 4], np.float32).reshape(1, 4, 1, 1), False)])
def test_folds_and_matches_onnxruntime(op, shift, first):
    inputs = ["t", "c"] if first else ["c", "t"]
    m = _graph([helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node(op, inputs, ["s"]),
                helper.make_node("Relu", ["s"], ["y"])], {"w": W, "b": B, "t": np.asarray(shift)})
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    ref = _ort(m, x)
    assert fold_bias_shifts(m) == 1
    assert [n.op_type for n in m.graph.node] == ["Conv", "Relu"]
    assert {i.name for i in m.graph.initializer} == {"w", "c_shifted_bias"}  # old bias and shift dropped
    onnx.checker.check_model(m)
    np.testing.assert_allclose(_ort(m, x), ref, rtol=1e-6, atol=1e-6)


def test_left_alone_where_not_provably_the_same():
    x_used_twice = _graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sub", ["c", "t"], ["s"]),
                           helper.make_node("Add", ["s", "c"], ["y"])], {"w": W, "t": np.float32(1.0)})
    on_width_axis = _graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sub", ["c", "t"], ["y"])],
                           {"w": W, "t": np.ones(3, np.float32)})
    not_constant = _graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sub", ["c", "x"], ["y"])],
                          {"w": np.ones((2, 2, 1, 1), np.float32)})
    graph_output = _graph([helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Sub", ["y", "t"], ["s"])],
                          {"w": W, "t": np.float32(1.0)})
    for m in (x_used_twice, on_width_axis, not_constant, graph_output):
        before = m.SerializeToString()
        assert fold_bias_shifts(m) == 0
        assert m.SerializeToString() == before


def test_initializers_read_inside_subgraphs_are_kept():
    then = helper.make_graph([helper.make_node("Identity", ["keep"], ["o1"])], "then", [],
                             [helper.make_tensor_value_info("o1", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["keep"], ["o2"])], "else", [],
                              [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2])])
    m = _graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Sub", ["c", "t"], ["s"]),
                helper.make_node("Relu", ["s"], ["r"]), helper.make_node("ReduceMax", ["r"], ["mx"], keepdims=0),
                helper.make_node("Greater", ["mx", "zero"], ["cond"]),
                helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
               {"w": W, "t": np.float32(0.5), "keep": np.ones(2, np.float32), "zero": np.float32(0.0)}, rank=1)
    assert fold_bias_shifts(m) == 1
    assert "keep" in {i.name for i in m.graph.initializer}
    onnx.checker.check_model(m)
