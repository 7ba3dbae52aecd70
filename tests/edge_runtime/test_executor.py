"""The run loop (edge_runtime/executor.py): fast path vs stats path, multi-output and optional
inputs, freed tensors, errors naming the node, and the per-plan program cache."""
from __future__ import annotations

import gc

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime as er
from edge_runtime import executor
from edge_runtime.errors import ExecutionError

ort = pytest.importorskip("onnxruntime")
N = helper.make_node


def _model() -> bytes:
    """Unary, binary, 3-input (Clip with an omitted min), multi-output (Split) and variadic (Concat) steps."""
    nodes = [N("Relu", ["x"], ["r"]), N("Add", ["r", "x"], ["a"]), N("Clip", ["a", "", "hi"], ["c"]),
             N("Split", ["c"], ["s0", "s1"], axis=1, num_outputs=2), N("Mul", ["s0", "s1"], ["m"]),
             N("Concat", ["m", "s1", "m"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(1.5, np.float32), "hi")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _session(model: bytes) -> er.InferenceSession:
    opts = er.SessionOptions()
    opts.graph_optimization_level = er.ORT_DISABLE_ALL  # keep every node a step
    return er.InferenceSession(model, opts, providers=["EdgeRuntimeExecutionProvider"])


def test_fast_and_stats_paths_match_onnxruntime() -> None:
    model = _model()
    sess = _session(model)
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    fast = sess.run(None, {"x": x})
    slow, stats = sess.run_with_stats(None, {"x": x})
    for got in (fast, slow):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6)
    assert [n.op_type for n in stats.nodes] == ["Relu", "Add", "Clip", "Split", "Mul", "Concat"]
    x[0, 0] = 99.0
    assert not np.array_equal(sess.run(None, {"x": x})[0], fast[0])  # no state kept between runs


def test_intermediates_are_freed_and_outputs_owned() -> None:
    sess = _session(_model())
    x = np.ones((2, 8), np.float32)
    values = {**sess.plan.graph.initializers, "x": x}
    executor._run_fast(executor._program(sess.plan), values)
    assert set(values) == {"a", "y", "hi"}  # x, r, c, s0, s1, m were released after their last use
    y, a = sess.run(None, {"x": x})
    assert y.flags.owndata and a.flags.owndata


def test_failing_step_names_node_and_shapes() -> None:
    """An exception that is not the runtime's own becomes an ExecutionError naming the node and its inputs."""
    sess = _session(_model())
    add = next(ins for ins in executor._program(sess.plan) if ins[6].node.op_type == "Add")

    def broken(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("boom")

    values = {"r": np.ones((3, 8), np.float32), "x": np.ones((3, 8), np.float32)}
    with pytest.raises(ExecutionError, match=r"node '.*' \(Add\) failed: ZeroDivisionError: boom.*\(3, 8\)"):
        executor._run_fast(((add[0], broken) + add[2:],), values)


def test_program_cache_follows_the_plan() -> None:
    sess = _session(_model())
    first = executor._program(sess.plan)
    assert executor._program(sess.plan) is first
    key = id(sess.plan)
    del sess, first
    gc.collect()
    assert key not in executor._PROGRAMS
