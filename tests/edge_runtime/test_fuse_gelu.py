"""The fuse_gelu pass: each exporter's GELU form becomes one FusedGelu; lookalikes stay.

Patterns are built with onnx.helper in the exact node order/operand order the torch
exporters emit (TorchScript opset 17, dynamo opset 18, dynamo opset 20 ``Gelu``); the
fused model is checked against onnxruntime on the same model and against a float64
reference.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime as er
from edge_runtime.kernels import activation
from edge_runtime.onnx_io import graph_from_model
from edge_runtime.ops.activation_fused import FusedGelu, gelu
from edge_runtime.errors import InvalidModelError, UnsupportedDTypeError
from edge_runtime.passes import fuse_gelu, toposort

ort = pytest.importorskip("onnxruntime")

N = helper.make_node
SHAPE = (4, 96)
CONSTS = {"sqrt2": math.sqrt(2), "inv_sqrt2": 1 / math.sqrt(2), "one": 1.0, "half": 0.5, "two": 2.0,
          "three": 3.0, "c": 0.044715, "k": math.sqrt(2 / math.pi), "bad": 0.6}
PRE = [N("Mul", ["inp", "one"], ["x"])]  # x is an intermediate, as after a MatMul + Add

ERF_TS = [N("Div", ["x", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["s"]),
          N("Mul", ["x", "s"], ["m"]), N("Mul", ["m", "half"], ["y"])]
ERF_DYNAMO18 = [N("Div", ["x", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["s"]),
                N("Mul", ["half", "s"], ["m"]), N("Mul", ["x", "m"], ["y"])]
ERF_HALF_X_FIRST = [N("Mul", ["x", "inv_sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["one", "e"], ["s"]),
                    N("Mul", ["half", "x"], ["hx"]), N("Mul", ["hx", "s"], ["y"])]
ERF_DIV2 = [N("Div", ["x", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["s"]),
            N("Mul", ["s", "x"], ["m"]), N("Div", ["m", "two"], ["y"])]
TANH_TS = [N("Mul", ["x", "x"], ["x2"]), N("Mul", ["x", "x2"], ["x3"]), N("Mul", ["c", "x3"], ["cx3"]),
           N("Add", ["x", "cx3"], ["inner"]), N("Mul", ["k", "inner"], ["u"]), N("Tanh", ["u"], ["t"]),
           N("Add", ["one", "t"], ["s"]), N("Mul", ["x", "s"], ["m"]), N("Mul", ["half", "m"], ["y"])]
TANH_DYNAMO18 = [N("Pow", ["x", "three"], ["x3"]), N("Mul", ["c", "x3"], ["cx3"]), N("Add", ["x", "cx3"], ["inner"]),
                 N("Mul", ["k", "inner"], ["u"]), N("Tanh", ["u"], ["t"]), N("Add", ["t", "one"], ["s"]),
                 N("Mul", ["half", "s"], ["m"]), N("Mul", ["x", "m"], ["y"])]
PATTERNS = {"erf_torchscript": (ERF_TS, "none"), "erf_dynamo18": (ERF_DYNAMO18, "none"),
            "erf_half_x_first": (ERF_HALF_X_FIRST, "none"), "erf_div2": (ERF_DIV2, "none"),
            "tanh_torchscript": (TANH_TS, "tanh"), "tanh_dynamo18": (TANH_DYNAMO18, "tanh")}


def _model(nodes: list, opset: int = 17, outputs: tuple[str, ...] = ("y",)) -> onnx.ModelProto:
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(
        PRE + nodes, "gelu", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in CONSTS.items() if k in used | {"one"}])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _fused(model: onnx.ModelProto) -> Counter:
    graph, _ = toposort.run(graph_from_model(model))
    graph, _ = fuse_gelu.run(graph)
    return Counter(n.op_type for n in graph.nodes)


def _gelu64(x: np.ndarray, approximate: str) -> np.ndarray:
    x = x.astype(np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _compare_with_ort(model: onnx.ModelProto, outputs: int = 1) -> None:
    x = (np.random.default_rng(0).standard_normal(SHAPE) * 3).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"inp": x})
    got = er.InferenceSession(model.SerializeToString()).run(None, {"inp": x})
    assert len(got) == outputs
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_pattern_becomes_one_fused_node(pattern: str) -> None:
    nodes, approximate = PATTERNS[pattern]
    counts = _fused(_model(nodes))
    assert counts == Counter({"Mul": 1, "FusedGelu": 1}), counts  # only PRE's Mul is left
    graph, _ = fuse_gelu.run(toposort.run(graph_from_model(_model(nodes)))[0])
    fused = [n for n in graph.nodes if n.op_type == "FusedGelu"][0]
    assert fused.inputs == ("x",) and fused.outputs == ("y",) and fused.attrs == {"approximate": approximate}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_pattern_matches_onnxruntime(pattern: str) -> None:
    _compare_with_ort(_model(PATTERNS[pattern][0]))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_op_is_rewritten_and_matches_onnxruntime(approximate: str) -> None:
    model = _model([N("Gelu", ["x"], ["y"], approximate=approximate)], opset=20)
    assert _fused(model)["FusedGelu"] == 1 and _fused(model)["Gelu"] == 0
    _compare_with_ort(model)


LOOKALIKES = {
    "wrong_erf_scale": [N("Div", ["x", "two"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["s"]),
                        N("Mul", ["x", "s"], ["m"]), N("Mul", ["m", "half"], ["y"])],
    "wrong_outer_scale": [N("Div", ["x", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["s"]),
                          N("Mul", ["x", "s"], ["m"]), N("Mul", ["m", "bad"], ["y"])],
    "multiplies_other_tensor": [N("Div", ["x", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]),
                                N("Add", ["e", "one"], ["s"]), N("Mul", ["inp", "s"], ["m"]),
                                N("Mul", ["m", "half"], ["y"])],
    "erf_minus_one": [N("Div", ["x", "sqrt2"], ["d"]), N("Erf", ["d"], ["e"]), N("Sub", ["e", "one"], ["s"]),
                      N("Mul", ["x", "s"], ["m"]), N("Mul", ["m", "half"], ["y"])],
    "wrong_cubic": [N("Pow", ["x", "three"], ["x3"]), N("Mul", ["bad", "x3"], ["cx3"]),
                    N("Add", ["x", "cx3"], ["inner"]), N("Mul", ["k", "inner"], ["u"]), N("Tanh", ["u"], ["t"]),
                    N("Add", ["t", "one"], ["s"]), N("Mul", ["half", "s"], ["m"]), N("Mul", ["x", "m"], ["y"])],
    "square_not_cube": [N("Pow", ["x", "two"], ["x3"]), N("Mul", ["c", "x3"], ["cx3"]),
                        N("Add", ["x", "cx3"], ["inner"]), N("Mul", ["k", "inner"], ["u"]), N("Tanh", ["u"], ["t"]),
                        N("Add", ["t", "one"], ["s"]), N("Mul", ["half", "s"], ["m"]), N("Mul", ["x", "m"], ["y"])],
}


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_lookalike_is_left_alone(name: str) -> None:
    model = _model(LOOKALIKES[name])
    assert _fused(model)["FusedGelu"] == 0
    _compare_with_ort(model)


def test_shared_intermediate_is_left_alone() -> None:
    # the Erf output is also a graph output: fusing would drop a tensor someone reads
    model = _model(ERF_TS, outputs=("y", "e"))
    counts = _fused(model)
    assert counts["FusedGelu"] == 0 and counts["Erf"] == 1
    _compare_with_ort(model, outputs=2)


def test_kernel_accuracy_against_float64() -> None:
    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    for approximate in ("none", "tanh"):
        got = gelu(x, approximate)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, _gelu64(x, approximate), rtol=1e-5, atol=2e-6)
    # erf itself: max abs error <= 1e-6 (0.5 x (1 + erf) error is |x|/2 times that)
    small = np.linspace(-2, 2, 4001, dtype=np.float32)
    np.testing.assert_allclose(gelu(small), _gelu64(small, "none"), rtol=0, atol=1e-6)


def test_kernel_handles_non_contiguous_and_nd_input() -> None:
    x = np.random.default_rng(1).standard_normal((3, 8, 10)).astype(np.float32)[:, ::2, :]
    np.testing.assert_allclose(FusedGelu(x), _gelu64(x, "none"), rtol=1e-5, atol=2e-6)


def test_fused_gelu_rejects_bad_attribute_and_dtype() -> None:
    with pytest.raises(InvalidModelError, match="approximate='sigmoid'"):
        FusedGelu(np.zeros(3, np.float32), approximate="sigmoid")
    with pytest.raises(UnsupportedDTypeError, match="float64"):
        FusedGelu(np.zeros(3, np.float64))


def test_torchscript_vit_block_fuses_every_gelu(tmp_path, numba_engine) -> None:
    torch = pytest.importorskip("torch")
    from tests import zoo

    for act, approximate in (("gelu", "none"), ("gelu_tanh", "tanh")):
        torch.manual_seed(0)
        model = zoo.ViT(image=16, patch=8, dim=16, depth=2, heads=2, attention="hand", act=act)
        path = zoo.export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / f"{act}.onnx", dynamo=False)
        proto = onnx.load(str(path))
        sess = er.InferenceSession(str(path))
        # each FusedGelu is folded further into its MatMul's epilogue (passes/fuse_activation.py)
        code = {"none": activation.GELU, "tanh": activation.GELU_TANH}[approximate]
        fused = [s.node for s in sess.plan.steps if s.node.attrs.get("activation") == code]
        assert len(fused) == 2 and {n.op_type for n in fused} <= {"FusedMatMul", "FusedGemm"}
        assert not any(s.node.op_type in ("Erf", "Tanh") for s in sess.plan.steps)
        x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
        want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], want[0], rtol=1e-4, atol=1e-5)
