"""Segments of layout ops alone run as numpy reshapes (edge_runtime.engine.layout), not onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.engine.layout import LayoutStep, layout_step
from edge_runtime.engine.partition import constants
from tests.edge_runtime.engine import graphs

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(3)


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _chain(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: list, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


CASES = {
    "flatten": ([helper.make_node("Flatten", ["x"], ["y"])], [], [2, 3, 4, 5], 17),
    "flatten axis -2": ([helper.make_node("Flatten", ["x"], ["y"], axis=-2)], [], [2, 3, 4, 5], 17),
    "flatten axis 0": ([helper.make_node("Flatten", ["x"], ["y"], axis=0)], [], [2, 3, 4], 17),
    "reshape 0 and -1": ([helper.make_node("Reshape", ["x", "s"], ["y"])], [_ints("s", [0, -1, 5])], [2, 3, 4, 5], 17),
    "reshape allowzero": ([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)], [_ints("s", [6, 20])],
                          [2, 3, 4, 5], 17),
    "squeeze axes input": ([helper.make_node("Squeeze", ["x", "a"], ["y"])], [_ints("a", [-1, 1])], [2, 1, 3, 1], 17),
    "squeeze all": ([helper.make_node("Squeeze", ["x"], ["y"])], [], [1, 3, 1, 4], 17),
    "squeeze axes attribute": ([helper.make_node("Squeeze", ["x"], ["y"], axes=[2])], [], [2, 3, 1], 11),
    "unsqueeze negative": ([helper.make_node("Unsqueeze", ["x", "a"], ["y"])], [_ints("a", [-1, 0])], [2, 3], 17),
    "unsqueeze attribute": ([helper.make_node("Unsqueeze", ["x"], ["y"], axes=[1])], [], [2, 3], 11),
    "chain": ([helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Flatten", ["a"], ["b"]),
               helper.make_node("Unsqueeze", ["b", "ax"], ["c"]), helper.make_node("Reshape", ["c", "s"], ["y"])],
              [_ints("ax", [2]), _ints("s", [0, 12, 1, 5])], [2, 3, 4, 5], 17),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_layout_op_reshapes_as_onnxruntime_does(case: str) -> None:
    nodes, inits, shape, opset = CASES[case]
    model = _chain(nodes, inits, shape, opset)
    step = layout_step(model, range(len(nodes)), ["x"], [nodes[-1].output[0]], constants(model.graph))
    assert isinstance(step, LayoutStep)
    x = RNG.standard_normal(shape).astype(np.float32)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = step(x)
    assert got.shape == want.shape and np.array_equal(got, want)


def test_what_is_not_a_chain_of_constant_layout_ops_stays_an_onnxruntime_segment() -> None:
    relu = _chain([helper.make_node("Flatten", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])], [], [2, 3])
    assert layout_step(relu, [0, 1], ["x"], ["y"], constants(relu.graph)) is None
    shaped = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    runtime_shape = helper.make_model(shaped, opset_imports=[helper.make_opsetid("", 17)])
    assert layout_step(runtime_shape, [0], ["x", "s"], ["y"], {}) is None  # two inputs
    assert layout_step(runtime_shape, [0], ["x"], ["y"], {}) is None  # the shape is not a constant
    flat = _chain([helper.make_node("Flatten", ["x"], ["y"])], [], [2, 3])
    assert layout_step(flat, [0], ["x"], ["z"], {}) is None  # not the segment's output


def _flatten_cnn() -> onnx.ModelProto:
    """Conv-Relu-Conv-Relu-Flatten-Gemm-Relu-Gemm: the Flatten alone between the second conv and the Gemm."""
    nodes = [helper.make_node("Conv", ["x", "W0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Flatten", ["r1"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "b2"], ["g"], transB=1),
             helper.make_node("Relu", ["g"], ["r2"]),
             helper.make_node("Gemm", ["r2", "W3", "b3"], ["y"], transB=1)]
    inits = [graphs._w("W0", 16, 3, 3, 3, scale=0.3), numpy_helper.from_array(np.full(16, -0.4, np.float32), "b0"),
             graphs._w("W1", 16, 16, 3, 3), numpy_helper.from_array(np.full(16, -0.2, np.float32), "b1"),
             graphs._w("W2", 32, 16 * 8 * 8), numpy_helper.from_array(np.full(32, -0.1, np.float32), "b2"),
             graphs._w("W3", 10, 32), graphs._w("b3", 10)]
    return graphs._model(nodes, [graphs._fin("x", "N", 3, 8, 8)], [graphs._fin("y", "N", 10)], inits)


def test_a_flatten_between_islands_runs_in_numpy_and_the_model_agrees() -> None:
    model = _flatten_cnn()
    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = edge_runtime.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                                         sparsity="force")
    kinds = [s.node.op_type for s in sess.plan.steps]
    i = kinds.index("LayoutSegment")
    assert kinds.count("LayoutSegment") == 1 and kinds[i - 1] == "Conv" and kinds[i + 1] == "Gemm", kinds
    for batch in (1, 3):
        feed = {"x": RNG.standard_normal((batch, 3, 8, 8)).astype(np.float32)}
        graphs.agree_with_onnxruntime(model, sess, feed)
        _, stats = sess.run_with_stats(None, feed)
        assert [n.kernel for n in stats.nodes if n.op_type == "LayoutSegment"] == ["layout"]
