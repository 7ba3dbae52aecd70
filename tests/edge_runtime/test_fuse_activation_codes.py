"""SiLU / HardSwish / HardSigmoid / Sigmoid / GELU fused into Conv, Gemm and MatMul (passes/fuse_activation.py).

Each activation pattern, built with onnx.helper in the forms the torch exporters emit
(``Mul(y, Sigmoid(y))`` in either operand order, the ``HardSwish`` op, ``HardSigmoid`` and
``HardSigmoid(1/6, 1/2)`` + ``Mul``), follows one layer of each dense kernel family (direct
im2col conv, depthwise, Winograd, 1x1 GEMM conv, Gemm, MatMul + bias). The planned graph must
be the one fused node with the expected code, and the numba engine's output must match
onnxruntime on the unfused model, NaN and +-Inf inputs included (same NaN/Inf positions).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime as er
from edge_runtime import planner
from edge_runtime.kernels import activation as act
from edge_runtime.onnx_io import graph_from_model

ort = pytest.importorskip("onnxruntime")

N = helper.make_node
RNG = np.random.default_rng(11)

# layer name -> (input shape, weight shape, node attrs, op)
LAYERS = {
    "direct": ((1, 8, 17, 17), (16, 8, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, "Conv"),
    "depthwise_s1": ((1, 16, 15, 15), (16, 1, 3, 3), {"group": 16, "pads": [1, 1, 1, 1]}, "Conv"),
    "depthwise_s2": ((1, 16, 15, 15), (16, 1, 5, 5), {"group": 16, "strides": [2, 2], "pads": [2, 2, 2, 2]}, "Conv"),
    "winograd": ((1, 64, 16, 16), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}, "Conv"),
    "pointwise": ((1, 32, 10, 10), (48, 32, 1, 1), {}, "Conv"),
    "gemm": ((4, 32), (24, 32), {"transB": 1}, "Gemm"),
    "matmul": ((2, 5, 32), (32, 24), {}, "MatMul"),
}
# pattern -> (nodes from "y" to "out", expected (code, p0, p1))
PATTERNS = {
    "silu": ([N("Sigmoid", ["y"], ["s"]), N("Mul", ["y", "s"], ["out"])], (act.SILU, 0.0, 0.0)),
    "silu_swapped": ([N("Sigmoid", ["y"], ["s"]), N("Mul", ["s", "y"], ["out"])], (act.SILU, 0.0, 0.0)),
    "hardswish": ([N("HardSwish", ["y"], ["out"])], (act.HARDSWISH, 0.0, 0.0)),
    "hardswish_gate": ([N("HardSigmoid", ["y"], ["h"], alpha=1 / 6, beta=0.5), N("Mul", ["y", "h"], ["out"])],
                       (act.HARDSWISH, 0.0, 0.0)),
    "hardsigmoid": ([N("HardSigmoid", ["y"], ["out"], alpha=0.3, beta=0.4)], (act.HARDSIGMOID, 0.3, 0.4)),
    "sigmoid": ([N("Sigmoid", ["y"], ["out"])], (act.SIGMOID, 0.0, 0.0)),
    # GELU as the TorchScript exporter writes it; passes/fuse_gelu.py makes a FusedGelu first
    "gelu": ([N("Div", ["y", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["s"]),
              N("Mul", ["y", "s"], ["m"]), N("Mul", ["m", "half"], ["out"])], (act.GELU, 0.0, 0.0)),
    "gelu_tanh": ([N("Mul", ["y", "y"], ["y2"]), N("Mul", ["y", "y2"], ["y3"]), N("Mul", ["c", "y3"], ["cy3"]),
                   N("Add", ["y", "cy3"], ["inner"]), N("Mul", ["k", "inner"], ["u"]), N("Tanh", ["u"], ["t"]),
                   N("Add", ["one", "t"], ["s"]), N("Mul", ["y", "s"], ["m"]), N("Mul", ["half", "m"], ["out"])],
                  (act.GELU_TANH, 0.0, 0.0)),
}
GELU_CONSTS = {"sqrt2": math.sqrt(2), "one": 1.0, "half": 0.5, "c": 0.044715, "k": math.sqrt(2 / math.pi)}


def _model(layer: str, tail: list, outputs: tuple[str, ...] = ("out",)) -> onnx.ModelProto:
    xs, ws, attrs, op = LAYERS[layer]
    w = (RNG.standard_normal(ws) * (2.0 / np.prod(ws[1:])) ** 0.5).astype(np.float32)
    bias = (RNG.standard_normal(ws[0] if op != "MatMul" else ws[1]) * 0.5).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")]
    used = {i for n in tail for i in n.input}
    inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in GELU_CONSTS.items() if k in used]
    if op == "MatMul":
        nodes = [N("MatMul", ["x", "w"], ["mm"]), N("Add", ["mm", "b"], ["y"])]
    else:
        nodes = [N(op, ["x", "w", "b"], ["y"], **attrs)]
    graph = helper.make_graph(nodes + tail, layer, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xs))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _planned(model: onnx.ModelProto) -> list:
    return list(planner.optimize(graph_from_model(model)).nodes)


def _input(layer: str, nonfinite: bool) -> np.ndarray:
    x = (RNG.standard_normal(LAYERS[layer][0]) * 2.0).astype(np.float32)
    if nonfinite:  # one NaN, one +inf, one -inf, far apart so most outputs stay finite
        flat = x.reshape(-1)
        flat[0], flat[flat.size // 2], flat[-1] = np.nan, np.inf, -np.inf
    return x


def _compare(model: onnx.ModelProto, x: np.ndarray) -> None:
    ours = er.InferenceSession(model.SerializeToString(), providers=["EdgeRuntimeExecutionProvider"])
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, ref in zip(ours.run(None, {"x": x}), theirs.run(None, {"x": x})):
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        fin = np.isfinite(ref)
        scale = float(np.abs(ref[fin]).max()) if fin.any() else 1.0
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)  # also +-inf where ref has them


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan_inf"])
def test_pattern_fuses_and_matches_onnxruntime(layer: str, pattern: str, nonfinite: bool) -> None:
    tail, (code, p0, p1) = PATTERNS[pattern]
    model = _model(layer, tail)
    nodes = _planned(model)
    assert [n.op_type for n in nodes] == ["Fused" + LAYERS[layer][3]]
    a = nodes[0].attrs
    assert (a["activation"], a["act_p0"], a["act_p1"]) == pytest.approx((code, p0, p1))
    _compare(model, _input(layer, nonfinite))


LOOKALIKES = {
    # the Sigmoid reads another tensor: y * sigmoid(x') is not SiLU
    "other_operand": [N("Sigmoid", ["y"], ["s"]), N("Neg", ["y"], ["z"]), N("Mul", ["z", "s"], ["out"])],
    # y has a third user: it must stay materialised
    "third_user": [N("Sigmoid", ["y"], ["s"]), N("Mul", ["y", "s"], ["m"]), N("Add", ["m", "y"], ["out"])],
    # HardSigmoid with other constants gated by Mul is not HardSwish
    "hardsigmoid_other": [N("HardSigmoid", ["y"], ["h"], alpha=0.2, beta=0.5), N("Mul", ["y", "h"], ["out"])],
}


@pytest.mark.parametrize("name", LOOKALIKES)
def test_lookalikes_keep_their_mul(name: str) -> None:
    model = _model("pointwise", LOOKALIKES[name])
    nodes = _planned(model)
    assert Counter(n.op_type for n in nodes)["Mul"] == 1
    assert all(n.attrs.get("activation", act.NONE) not in (act.SILU, act.HARDSWISH) for n in nodes)
    _compare(model, _input("pointwise", False))


def test_gate_that_is_a_graph_output_is_not_fused() -> None:
    model = _model("pointwise", PATTERNS["silu"][0], outputs=("out", "s"))
    nodes = _planned(model)
    assert "Sigmoid" in [n.op_type for n in nodes] and "Mul" in [n.op_type for n in nodes]
    _compare(model, _input("pointwise", False))


def test_sparse_builders_decline_new_codes() -> None:
    """A conv with a fused SiLU never goes to a sparse kernel (their epilogues lack the code)."""
    from edge_runtime.prepared import prepare

    graph = planner.optimize(graph_from_model(_model("winograd", PATTERNS["silu"][0])))
    assert graph.nodes[0].op_type == "FusedConv" and prepare(graph.nodes[0], graph.initializers).sparse_kernel() is None
    graph = planner.optimize(graph_from_model(_model("matmul", PATTERNS["hardswish"][0])))
    assert graph.nodes[0].op_type == "FusedMatMul" and prepare(graph.nodes[0], graph.initializers).sparse_kernel() is None
    model = _model("winograd", PATTERNS["silu"][0])
    ours = er.InferenceSession(model.SerializeToString(), providers=["EdgeRuntimeExecutionProvider"],
                               sparsity="force")
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _input("winograd", False)
    np.testing.assert_allclose(ours.run(None, {"x": x})[0], ref.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("code", sorted(act.CODES))
def test_numba_epilogue_matches_float64_reference(code: int) -> None:
    """act_inplace (the kernels' epilogue) against numpy in float64, over [-30, 30] and non-finite values."""
    x = np.concatenate([np.linspace(-30, 30, 4001, dtype=np.float32),
                        np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)])
    p0, p1 = (-0.5, 0.75) if code == act.CLIP else (0.3, 0.4)
    got = act.apply_activation(x.copy(), code, p0, p1)
    want = act.apply_activation(x.astype(np.float64), code, p0, p1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)  # SiLU near -18: MLAS sigmoid is 0
