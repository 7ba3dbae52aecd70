"""Small ONNX graphs for the engine tests: ReLU layers to cut at, branches, shape subgraphs."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


class FreedBytes(bytes):
    """bytes that say when they are freed (bytes take no weak reference): ``FreedBytes.freed``;
    a test resets it with ``monkeypatch.setattr(FreedBytes, "freed", False)``."""

    freed = False

    def __del__(self) -> None:
        type(self).freed = True


def relu_family(act: str, threshold: float = 0.1) -> tuple[dict, list[str]]:
    """A zero-producing activation node's attributes and extra inputs (a Clip reads the constants of
    :func:`clip_bounds`)."""
    return {"Relu": ({}, []), "LeakyRelu": ({"alpha": 0.2}, []), "ThresholdedRelu": ({"alpha": threshold}, []),
            "Clip": ({}, ["lo", "hi"])}[act]


def clip_bounds() -> list[onnx.TensorProto]:
    """The "lo" (0) and "hi" (0.5) constants :func:`relu_family`'s Clip reads."""
    return [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
            numpy_helper.from_array(np.array(0.5, np.float32), "hi")]


def agree_with_onnxruntime(model: onnx.ModelProto, sess, feed: dict[str, np.ndarray], rel_tol: float = 1e-4) -> None:
    """``sess``'s outputs on ``feed`` equal onnxruntime's on ``model`` within ``rel_tol`` of the largest value."""
    import onnxruntime

    want = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    for got, ref in zip(sess.run(None, feed), want):
        np.testing.assert_allclose(got, ref, rtol=rel_tol, atol=rel_tol * max(1.0, float(np.abs(ref).max())))


def _w(name: str, *shape: int, scale: float = 0.1) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes: list, inputs: list, outputs: list, inits: list, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _fin(name: str, *shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def mlp(hidden: int = 256, bias_shift: float = -1.5) -> onnx.ModelProto:
    """x (N, 64) -> MatMul+Add -> Relu -> MatMul+Add -> Relu -> Gemm -> Sigmoid; sparse hiddens."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["a1"]), helper.make_node("Add", ["a1", "b1"], ["z1"]),
        helper.make_node("Relu", ["z1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "W2"], ["a2"]), helper.make_node("Add", ["a2", "b2"], ["z2"]),
        helper.make_node("Relu", ["z2"], ["h2"]),
        helper.make_node("Gemm", ["h2", "W3", "b3"], ["z3"], transB=1),
        helper.make_node("Sigmoid", ["z3"], ["y"]),
    ]
    inits = [_w("W1", 64, hidden, scale=0.3), numpy_helper.from_array(np.full(hidden, bias_shift, np.float32), "b1"),
             _w("W2", hidden, hidden, scale=0.3), numpy_helper.from_array(np.full(hidden, bias_shift, np.float32), "b2"),
             _w("W3", 64, hidden), _w("b3", 64)]
    return _model(nodes, [_fin("x", "N", 64)], [_fin("y", "N", 64)], inits)


def cnn_residual() -> onnx.ModelProto:
    """Conv-BN-Relu, a residual block of two 3x3 convs, a second output, and a shape subgraph."""
    c = 32
    nodes = [
        helper.make_node("Conv", ["x", "Wc0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c0", "g0", "be0", "m0", "v0"], ["n0"]),
        helper.make_node("Relu", ["n0"], ["r0"]),
        helper.make_node("Conv", ["r0", "Wc1", "bc1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "Wc2", "bc2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r0"], ["s"]),                      # residual
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("Shape", ["r2"], ["shp"]),                         # shape subgraph
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Reshape", ["p", "newshape"], ["f"]),
        helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], transB=1),
        helper.make_node("ReduceMax", ["r1"], ["m"], keepdims=0),         # a second output
    ]
    inits = [_w("Wc0", c, 3, 3, 3, scale=0.3), numpy_helper.from_array(np.ones(c, np.float32), "g0"),
             numpy_helper.from_array(np.full(c, -0.5, np.float32), "be0"), _w("m0", c),
             numpy_helper.from_array(np.ones(c, np.float32), "v0"),
             _w("Wc1", c, c, 3, 3), numpy_helper.from_array(np.full(c, -0.3, np.float32), "bc1"),
             _w("Wc2", c, c, 3, 3), _w("bc2", c), _w("Wf", 10, c), _w("bf", 10),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "zero1"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    outputs = [_fin("y", "N", 10), helper.make_tensor_value_info("m", TensorProto.FLOAT, [])]
    return _model(nodes, [_fin("x", "N", 3, 16, 16)], outputs, inits)


def shared_input() -> onnx.ModelProto:
    """Two islands reading the same Relu output, and a graph output that is also an island input."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "Wa"], ["a"]),
        helper.make_node("MatMul", ["r", "Wb"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    inits = [_w("Wa", 128, 96), _w("Wb", 128, 96)]
    return _model(nodes, [_fin("x", "N", 128)], [_fin("y", "N", 96), _fin("r", "N", 128)], inits)


def with_if() -> onnx.ModelProto:
    """An If whose branches read an outer-scope tensor produced before the island."""
    then_g = helper.make_graph([helper.make_node("Identity", ["h"], ["t_out"])], "then", [], [_fin("t_out", "N", 64)])
    else_g = helper.make_graph([helper.make_node("Neg", ["h"], ["e_out"])], "else", [], [_fin("e_out", "N", 64)])
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0),
        helper.make_node("Greater", ["sx", "zero"], ["cond"]),
        helper.make_node("MatMul", ["h", "W"], ["z"]),
        helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g),
        helper.make_node("MatMul", ["branch", "W"], ["z2"]),
        helper.make_node("Add", ["z", "z2"], ["y"]),
    ]
    inits = [_w("W", 64, 64), numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    return _model(nodes, [_fin("x", "N", 64)], [_fin("y", "N", 64)], inits)


def dense_silu_cnn() -> onnx.ModelProto:
    """Conv -> SiLU (Sigmoid * x) -> Conv: nothing to skip, so no island."""
    nodes = [
        helper.make_node("Conv", ["x", "W0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c0"], ["s0"]), helper.make_node("Mul", ["c0", "s0"], ["a0"]),
        helper.make_node("Conv", ["a0", "W1"], ["y"], pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, [_fin("x", 1, 3, 16, 16)], [_fin("y", 1, 32, 16, 16)],
                  [_w("W0", 32, 3, 3, 3), _w("W1", 32, 32, 3, 3)])
