"""Prepared layers (edge_runtime/prepared.py, ops/conv_layer.py, ops/matmul_layer.py): one parse of a
layer's attributes, read by the planner, the dispatcher, the cost model and ``devices calibrate``."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime as er
from edge_runtime import dispatch, planner, prepared
from edge_runtime.errors import InvalidArgumentError
from edge_runtime.graph import Graph, Node, ValueInfo
from edge_runtime.ops import registry
from edge_runtime.ops.conv import Conv, ConvAttrs
from edge_runtime.prepared import PreparedLayer, SparseKernel, prepare
from edge_runtime.profiling import calibrate
from edge_runtime.profiling import costmodel as cm

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_conv_attrs_are_parsed_once_with_the_specs_defaults():
    a = ConvAttrs.from_attrs({"pads": [1, 1, 1, 1], "strides": [2, 2], "auto_pad": ""})
    assert a == ConvAttrs("NOTSET", None, 1, None, (1, 1, 1, 1), (2, 2))
    assert a.window(2) == ((2, 2), (1, 1))
    node = Node("FusedConv", ("x", "W"), ("y",), {"pads": [1, 1, 1, 1], "activation": 1}, "c")
    layer = prepare(node, {"W": _w(8, 3, 3, 3)})
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    before = layer.dense(x)
    node.attrs["pads"] = [0, 0, 0, 0]  # the layer never reads its node again
    node.attrs["activation"] = 0
    np.testing.assert_array_equal(layer.dense(x), before)
    assert before.shape == (1, 8, 6, 6) and before.min() >= 0.0


@pytest.mark.parametrize("attrs, message", [
    ({"strides": [0, 1]}, "strides=[0, 1] is invalid; expected 2 positive ints (one per spatial dim). "
                          "Fix the model's 'strides' attribute."),
    ({"kernel_shape": [2, 2]}, "Conv kernel_shape=[2, 2] does not match the weight's spatial shape [3, 3]; "
                               "expected them equal. Fix or drop the model's kernel_shape attribute."),
    ({"pads": [1, 1]}, "pads=[1, 1] is invalid for 2 spatial dims; expected 4 non-negative ints (begins then "
                       "ends). Fix the model's 'pads' attribute."),
    ({"auto_pad": "SAME"}, "auto_pad='SAME' is not valid; expected one of ('NOTSET', 'SAME_UPPER', 'SAME_LOWER', "
                           "'VALID'). Fix the model's attribute."),
])
def test_prepared_conv_raises_the_plain_ops_one_line_errors(attrs, message):
    x, w = np.ones((1, 2, 5, 5), np.float32), _w(3, 2, 3, 3)
    with pytest.raises(InvalidArgumentError) as plain:
        Conv(x, w, **attrs)
    layer = prepare(Node("Conv", ("x", "W"), ("y",), attrs, "c"), {"W": w})
    with pytest.raises(InvalidArgumentError) as prepped:
        layer.dense(x)
    assert str(plain.value) == str(prepped.value) == message


def _cost(op: str, attrs: dict, w: np.ndarray, x: tuple[int, ...], y: tuple[int, ...] | None,
          bias: np.ndarray | None = None) -> cm.LayerCost:
    inputs = ("x", "W") + (("b",) if bias is not None else ())
    node = Node(op, inputs, ("y",), attrs, "n")
    consts = {"W": w, **({"b": bias} if bias is not None else {})}
    graph = Graph((node,), consts, (ValueInfo("x", np.dtype("float32"), x),), (), {"": 17})
    return cm.layer_cost(node, graph, {"x": x, **({"y": y} if y is not None else {})})


# (op, attrs, weight, bias, x, y) and the costs the cost model gave before prepared layers (flops, bytes,
# weight bytes, family, output shape, scale): strided, dilated, asymmetrically padded 1x1, SAME_UPPER,
# grouped, Gemm with transB and alpha, a batched Gemm
PREVIOUS = [
    ("FusedConv", {"pads": [1, 1, 1, 1], "strides": [2, 2], "activation": 1}, (128, 64, 3, 3), None,
     (1, 64, 15, 15), (1, 128, 8, 8), (9437184.0, 385280.0, 294912.0, "conv", 1.0)),
    ("FusedConv", {"pads": [2, 2, 2, 2], "dilations": [2, 2], "activation": 1}, (64, 64, 3, 3), None,
     (1, 64, 20, 20), (1, 64, 20, 20), (29491200.0, 352256.0, 147456.0, "conv", 0.5 ** 0.5)),
    ("FusedConv", {"pads": [0, 1, 2, 0], "activation": 1}, (256, 256, 1, 1), None,
     (1, 256, 7, 9), (1, 256, 9, 10), (11796480.0, 418816.0, 262144.0, "gemm", 2 / 3)),
    ("FusedConv", {"auto_pad": "SAME_UPPER", "strides": [2, 2], "activation": 1}, (96, 32, 5, 5), None,
     (1, 32, 17, 17), (1, 96, 9, 9), (12441600.0, 375296.0, 307200.0, "conv", 0.75 ** 0.5)),
    ("FusedConv", {"pads": [1, 1, 1, 1], "group": 8, "activation": 1}, (64, 8, 3, 3), None,
     (1, 64, 16, 16), (1, 64, 16, 16), (2359296.0, 149504.0, 18432.0, None, 1.0)),
    ("FusedGemm", {"transB": 1, "alpha": 0.5}, (300, 200), (300,), (1, 200), (1, 300),
     (120000.0, 243200.0, 240000.0, "gemv", 1.0)),
    ("FusedGemm", {}, (200, 300), (300,), (4, 200), (4, 300), (480000.0, 249200.0, 240000.0, "gemm", 1.0)),
]


@pytest.mark.parametrize("op, attrs, w_shape, b_shape, x, y, expected", PREVIOUS)
def test_cost_model_reads_the_prepared_layer_and_keeps_its_figures(op, attrs, w_shape, b_shape, x, y, expected):
    bias = None if b_shape is None else _w(*b_shape)
    cost = _cost(op, attrs, _w(*w_shape), x, y, bias)
    flops, nbytes, weight_bytes, family, scale = expected
    assert (cost.flops, cost.bytes, cost.weight_bytes, cost.family) == (flops, nbytes, weight_bytes, family)
    assert cost.output_shape == y and cost.sparse_scale == pytest.approx(scale)
    if op == "FusedConv":  # output shape unknown: derived from the attributes as the runtime pads
        assert _cost(op, attrs, _w(*w_shape), x, None, bias) == cost


def test_dispatcher_limits_are_the_family_crossover_times_the_layers_scale():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 14, 14])
    w = numpy_helper.from_array(_w(64, 64, 3, 3), "w")
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]),
                           helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1])],
                          "c", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    sess = er.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                               providers=["EdgeRuntimeExecutionProvider"], sparsity="auto")
    (step,) = [s for s in sess.plan.steps if isinstance(s.fn, dispatch.Dispatcher)]
    layer = prepare(step.node, sess.plan.graph.initializers)
    assert layer.crossover_scale == pytest.approx(0.5 ** 0.5)  # 64 output channels: sqrt(64/128)
    assert step.fn.limits == dispatch.limits(layer, {})
    assert step.fn.limits["conv"] == pytest.approx(dispatch.default_crossover({})["conv"] * layer.crossover_scale)


def test_calibration_stores_the_break_even_over_the_scale_the_dispatcher_multiplies_back(monkeypatch):
    monkeypatch.setattr(calibrate, "peak_gflops", lambda n, reps: 10.0)
    monkeypatch.setattr(calibrate, "bandwidth_gbps", lambda mb, reps: 1.0)
    monkeypatch.setattr(calibrate, "_crossover", lambda calls, runs: 0.3)  # every layer breaks even at 0.3
    cal = calibrate.calibrate_profile(quick=True)
    for family in ("gemv", "gemm", "conv"):
        calls, scale = calibrate._family_calls(family, True)
        op, w_shape, _ = calibrate._LAYERS[family][True]
        attrs = {"pads": [1, 1, 1, 1]} if op == "FusedConv" else {}
        layer = prepare(Node(op, ("x", "w"), ("y",), attrs, "same"), {"w": np.zeros(w_shape, np.float32)})
        assert scale == layer.crossover_scale
        assert dispatch.limits(layer, cal.crossovers)[family] == pytest.approx(0.3)
    assert cal.crossovers["conv"] == pytest.approx(0.6)  # the quick 32-channel conv's scale is 0.5


def test_calibration_times_the_layers_sparse_kernel_against_its_dense_path():
    for family in ("gemv", "gemm", "conv"):
        calls, _ = calibrate._family_calls(family, True)
        sparse, dense = calls(0.2)
        np.testing.assert_allclose(sparse(0), dense(0), rtol=1e-4, atol=1e-4)


def test_sparse_kernels_only_where_they_apply():
    w4 = _w(16, 16, 3, 3)
    assert prepare(Node("Conv", ("x", "W"), ("y",)), {"W": w4}).sparse_kernel() is None  # unfused
    assert prepare(Node("FusedConv", ("x", "W"), ("y",), {"group": 2}), {"W": _w(16, 8, 3, 3)}).sparse_kernel() is None
    assert prepare(Node("FusedConv", ("x", "W", "B"), ("y",)), {"W": w4}).sparse_kernel() is None  # runtime bias
    assert prepare(Node("FusedConv", ("x", "W"), ("y",)), {}) is None  # runtime weights: no layer
    assert prepare(Node("FusedGemm", ("x", "W"), ("y",), {"transA": 1}), {"W": _w(8, 8)}).sparse_kernel() is None
    assert prepare(Node("Relu", ("x",), ("y",)), {}) is None
    ms = Node("FusedGemm", ("x", "W"), ("y",), {"activation": "Relu"}, "fc", "com.microsoft")  # onnxruntime's op
    assert prepare(ms, {"W": _w(8, 8)}) is None
    layer = prepare(Node("FusedConv", ("x", "W"), ("y",), {"pads": [1, 1, 1, 1]}), {"W": w4})
    assert layer.sparse_kernel() is layer.sparse_kernel()  # built once


def test_a_duplicate_prepare_is_refused(monkeypatch):
    monkeypatch.setattr(prepared, "_PREPARERS", dict(prepared._PREPARERS))
    with pytest.raises(ValueError, match="duplicate prepare for 'FusedConv'"):
        prepared.register_prepare("FusedConv")(lambda node, constants, ctx: None)


class _ToyKernel(SparseKernel):
    calls = 0

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def family(self, x: np.ndarray) -> str:
        return "gemm"

    def __call__(self, x: np.ndarray, dens: float) -> np.ndarray:
        _ToyKernel.calls += 1
        return x * self.w


class _ToyLayer(PreparedLayer):
    def __init__(self, node: Node, w: np.ndarray) -> None:
        self.name, self.op_type, self.weight_shape, self._w = node.name, node.op_type, w.shape, w

    def family(self, x_shape):
        return "gemm"

    def _build_dense(self):
        return lambda x, w: x * w

    def _build_sparse(self):
        return _ToyKernel(self._w)


def test_a_new_sparse_kernel_needs_only_its_ops_prepare(monkeypatch):
    """An op registered with a prepare whose layer has a sparse kernel is dispatched: no other file changes."""
    monkeypatch.setattr(prepared, "_PREPARERS", dict(prepared._PREPARERS))
    monkeypatch.setattr(registry, "_IMPLS", dict(registry._IMPLS))
    registry.register("ToyScale", domain=registry.INTERNAL_DOMAIN)(lambda x, w: x * w)
    prepared.register_prepare("ToyScale")(lambda node, constants, ctx: _ToyLayer(node, constants[node.inputs[1]]))
    node = Node("ToyScale", ("x", "w"), ("y",), {}, "toy", registry.INTERNAL_DOMAIN)
    w = np.full(4, 2.0, np.float32)
    graph = Graph((node,), {"w": w}, (ValueInfo("x", np.dtype("float32"), (1, 4)),),
                  (ValueInfo("y", np.dtype("float32"), (1, 4)),), {"": 17, registry.INTERNAL_DOMAIN: 1})
    (step,) = planner.build(graph, planner.PlanContext(sparsity="force", optimize=False)).steps
    assert isinstance(step.fn, dispatch.Dispatcher)
    x = np.array([[0.0, 1.0, 0.0, 3.0]], np.float32)
    before = _ToyKernel.calls
    np.testing.assert_array_equal(step.fn(x, w), x * 2)
    assert step.fn.last_kernel == "sparse" and _ToyKernel.calls == before + 1
    (off,) = planner.build(graph, planner.PlanContext(sparsity="off", optimize=False)).steps
    assert not isinstance(off.fn, dispatch.Dispatcher)
