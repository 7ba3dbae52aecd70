"""If, Loop and Scan (ops/control_flow.py) on hand-built graphs, against onnxruntime.

Covers what the backend node cases do not: nested If in a Loop, subgraphs reading outer-scope
values (also values nothing else reads, which the passes must keep and order), zero-trip loops,
optional trip count and condition, Scan directions and axes, Scan-8 sequence lengths, branches
of differing shapes, float16 inputs read in a body, and errors/inspect reaching subgraphs.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.errors import UnsupportedOpError
from edge_runtime.onnx_io import graph_from_model, proto_nodes

ort = pytest.importorskip("onnxruntime")

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
info = helper.make_tensor_value_info


def _model(nodes, inputs, outputs, inits=(), opset=17) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _both(model: bytes, feed: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(onnxruntime, edge_runtime) pairs of every output, checked equal in dtype and shape."""
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    got = edge_runtime.InferenceSession(model).run(None, feed)
    for w, g in zip(want, got):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    return list(zip(want, got))


def _numba(model: bytes) -> edge_runtime.InferenceSession:
    return edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"])


def _branch(name: str, nodes, out: str, shape=None) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [info(out, F, shape)])


def _accumulate_loop(m_name: str = "M", cond_name: str = "cond") -> bytes:
    """y = x, then each iteration: y += w * (2 if i is even else -1), via an If reading w and i."""
    even_then = _branch("then", [helper.make_node("Mul", ["w", "two"], ["d_then"])], "d_then")
    even_else = _branch("else", [helper.make_node("Neg", ["w"], ["d_else"])], "d_else")
    body = helper.make_graph(
        [helper.make_node("Mod", ["i", "two_i"], ["r"]),
         helper.make_node("Equal", ["r", "zero_i"], ["even"]),
         helper.make_node("If", ["even"], ["d"], then_branch=even_then, else_branch=even_else),
         helper.make_node("Add", ["y_in", "d"], ["y_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("ReduceSum", ["y_out"], ["s"], keepdims=0)],
        "body", [info("i", I64, []), info("c_in", B, []), info("y_in", F, [3])],
        [info("c_out", B, []), info("y_out", F, [3]), info("s", F, [])])
    nodes = [helper.make_node("Mul", ["x", "half"], ["w"]),  # w is read only inside the body's If
             helper.make_node("Loop", [m_name, cond_name, "x"], ["y", "sums"], body=body)]
    inits = [("two", np.float32(2.0)), ("two_i", np.int64(2)), ("zero_i", np.int64(0)),
             ("half", np.float32(0.5))]
    return _model(nodes, [info("x", F, [3]), info("M", I64, []), info("cond", B, [])],
                  [info("y", F, [3]), info("sums", F, None)], inits)


@pytest.mark.parametrize("trips", [0, 1, 5])
def test_nested_if_in_loop_reads_outer_values(trips):
    x = np.array([1.0, -2.0, 3.0], np.float32)
    pairs = _both(_accumulate_loop(), {"x": x, "M": np.array(trips, np.int64), "cond": np.array(True)})
    y, sums = pairs[0][1], pairs[1][1]
    expected = x + 0.5 * x * sum(2 if i % 2 == 0 else -1 for i in range(trips))
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert sums.shape == (trips,)


def test_zero_trip_loop_keeps_initial_values_and_empty_scan_outputs():
    x = np.array([1.0, 2.0, 3.0], np.float32)
    y, sums = _numba(_accumulate_loop()).run(None, {"x": x, "M": np.array(0, np.int64), "cond": np.array(True)})
    np.testing.assert_array_equal(y, x)
    assert sums.shape == (0,) and sums.dtype == np.float32


def test_false_condition_runs_no_iteration():
    x = np.array([1.0, 2.0, 3.0], np.float32)
    _both(_accumulate_loop(), {"x": x, "M": np.array(4, np.int64), "cond": np.array(False)})


def test_value_read_only_in_a_subgraph_is_kept_and_ordered_before_its_reader():
    plan = _numba(_accumulate_loop()).plan
    ops = [s.node.op_type for s in plan.steps]
    assert ops == ["Mul", "Loop"], ops  # the Mul only the body reads survives dead-node removal
    assert set(plan.steps[1].node.implicit_inputs) == {"w", "two", "two_i", "zero_i"}
    assert "w" in plan.steps[1].release  # freed after its last (implicit) reader, not before


def _while_loop(with_trip: bool) -> bytes:
    """Double v while its sum is below a limit read from the outer scope; scan out each v."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["v_in", "two"], ["v_out"]),
         helper.make_node("ReduceSum", ["v_out"], ["total"], keepdims=0),
         helper.make_node("Less", ["total", "limit"], ["c_out"]),
         helper.make_node("Identity", ["v_out"], ["scan"])],
        "body", [info("i", I64, []), info("c_in", B, []), info("v_in", F, [2])],
        [info("c_out", B, []), info("v_out", F, [2]), info("scan", F, [2])])
    loop = helper.make_node("Loop", ["M" if with_trip else "", "cond", "v"], ["v_final", "trace"], body=body)
    inputs = [info("v", F, [2]), info("cond", B, []), info("limit", F, [])]
    inputs += [info("M", I64, [])] if with_trip else []
    return _model([loop], inputs, [info("v_final", F, [2]), info("trace", F, [None, 2])], [("two", np.float32(2))])


@pytest.mark.parametrize("with_trip,trips", [(False, None), (True, 2), (True, 100)])
def test_condition_and_optional_trip_count(with_trip, trips):
    feed = {"v": np.array([0.5, 1.0], np.float32), "cond": np.array(True), "limit": np.array(40.0, np.float32)}
    if with_trip:
        feed["M"] = np.array(trips, np.int64)
    pairs = _both(_while_loop(with_trip), feed)
    assert pairs[1][1].shape[0] == (min(trips, 5) if with_trip else 5)


def _scan9(in_dir: int, out_dir: int, in_axis: int, out_axis: int) -> bytes:
    """Running sum over one scan input (along ``in_axis``), the partial sums stacked on ``out_axis``."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x_t"], ["acc_out"]),
         helper.make_node("Mul", ["acc_out", "scale"], ["y_t"])],
        "body", [info("acc_in", F, [3]), info("x_t", F, [3])], [info("acc_out", F, [3]), info("y_t", F, [3])])
    scan = helper.make_node("Scan", ["acc0", "xs"], ["acc", "ys"], body=body, num_scan_inputs=1,
                            scan_input_directions=[in_dir], scan_output_directions=[out_dir],
                            scan_input_axes=[in_axis], scan_output_axes=[out_axis])
    return _model([scan], [info("acc0", F, [3]), info("xs", F, None), info("scale", F, [])],
                  [info("acc", F, [3]), info("ys", F, None)])


@pytest.mark.parametrize("in_dir,out_dir,in_axis,out_axis", [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0),
                                                              (1, 1, -1, 1), (0, 1, 1, -2)])
def test_scan_directions_and_axes(in_dir, out_dir, in_axis, out_axis):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, 3) if in_axis == 0 else (3, 4)).astype(np.float32)
    _both(_scan9(in_dir, out_dir, in_axis, out_axis),
          {"acc0": np.ones(3, np.float32), "xs": xs, "scale": np.array(0.5, np.float32)})


def test_scan8_batch_and_sequence_lengths():
    body = helper.make_graph([helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
                              helper.make_node("Identity", ["s_out"], ["y_t"])],
                             "body", [info("s_in", F, [2]), info("x_t", F, [2])],
                             [info("s_out", F, [2]), info("y_t", F, [2])])
    scan = helper.make_node("Scan", ["lens", "s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1,
                            directions=[1])
    model = _model([scan], [info("lens", I64, [2]), info("s0", F, [2, 2]), info("xs", F, [2, 4, 2])],
                   [info("s", F, [2, 2]), info("ys", F, [2, 4, 2])], opset=8)
    xs = np.arange(16, dtype=np.float32).reshape(2, 4, 2)
    s, ys = _numba(model).run(None, {"lens": np.array([4, 2], np.int64), "s0": np.zeros((2, 2), np.float32),
                                     "xs": xs})
    np.testing.assert_array_equal(s, [xs[0].sum(0), xs[1, :2].sum(0)])
    np.testing.assert_array_equal(ys[0], np.cumsum(xs[0, ::-1], 0)[::-1][::-1])  # reverse scan: last first
    np.testing.assert_array_equal(ys[1, 2:], 0)  # beyond the sequence length: zeros
    (want_s, want_ys) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"lens": np.array([4, 2], np.int64), "s0": np.zeros((2, 2), np.float32), "xs": xs})
    np.testing.assert_array_equal(s, want_s)
    np.testing.assert_array_equal(ys, want_ys)


def test_if_branches_of_differing_shapes():
    then_b = _branch("then", [helper.make_node("Concat", ["x", "x"], ["t"], axis=0)], "t", None)
    else_b = _branch("else", [helper.make_node("ReduceSum", ["x"], ["e"], keepdims=1)], "e", None)
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b)],
                   [info("c", B, []), info("x", F, [3])], [info("y", F, None)])
    x = np.array([1.0, 2.0, 4.0], np.float32)
    assert _both(model, {"c": np.array(True), "x": x})[0][1].shape == (6,)
    assert _both(model, {"c": np.array(False), "x": x})[0][1].shape == (1,)


def test_float16_input_read_inside_a_branch():
    then_b = _branch("then", [helper.make_node("Add", ["x", "x"], ["t"])], "t")
    else_b = _branch("else", [helper.make_node("Neg", ["x"], ["e"])], "e")
    then_b.output[0].type.tensor_type.elem_type = else_b.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b)],
                   [info("c", B, []), info("x", TensorProto.FLOAT16, [2])], [info("y", TensorProto.FLOAT16, [2])])
    x = np.array([1.5, -3.0], np.float16)
    (y,) = _numba(model).run(None, {"c": np.array(True), "x": x})
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, x + x)


def test_graph_ir_lists_implicit_inputs_of_nested_subgraphs():
    graph = graph_from_model(onnx.load_from_string(_accumulate_loop()))
    loop = next(n for n in graph.nodes if n.op_type == "Loop")
    body = loop.attrs["body"]
    nested_if = next(n for n in body.nodes if n.op_type == "If")
    assert nested_if.implicit_inputs == ("w", "two")
    assert set(loop.implicit_inputs) == {"w", "two", "two_i", "zero_i"}


def test_missing_op_inside_a_body_is_named_and_inspect_finds_it(tmp_path):
    then_b = _branch("then", [helper.make_node("Unique", ["x"], ["t"])], "t")
    else_b = _branch("else", [helper.make_node("Neg", ["x"], ["e"])], "e")
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b)],
                   [info("c", B, []), info("x", F, [3])], [info("y", F, None)])
    with pytest.raises(UnsupportedOpError, match="Unique"):
        _numba(model)
    assert sorted(n.op_type for n in proto_nodes(onnx.load_from_string(model).graph)) == ["If", "Neg", "Unique"]
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    from edge_runtime.inspect import inspect_path

    info_ = inspect_path(path)
    assert info_["unsupported_ops"] == ["Unique"] and info_["op_counts"]["Unique"] == 1


def test_fusion_keeps_a_value_a_branch_reads():
    """Conv -> Relu would fuse (dropping the Conv output), but an If branch also reads the Conv output."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    then_b = _branch("then", [helper.make_node("ReduceMean", ["c"], ["t"], keepdims=0)], "t")
    else_b = _branch("else", [helper.make_node("ReduceMax", ["c"], ["e"], keepdims=0)], "e")
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node("If", ["flag"], ["s"], then_branch=then_b, else_branch=else_b)],
                   [info("x", F, [1, 3, 8, 8]), info("flag", B, [])], [info("r", F, None), info("s", F, None)],
                   [("w", w)])
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    for flag in (True, False):
        _both(model, {"x": x, "flag": np.array(flag)})


def _constant_if(passthrough: bool) -> bytes:
    then_b = (helper.make_graph([], "then", [], [info("x", F, [2])]) if passthrough  # returns the outer x itself
              else _branch("then", [helper.make_node("Identity", ["x"], ["t"])], "t", [2]))
    else_b = _branch("else", [helper.make_node("Neg", ["k"], ["e"])], "e", [2])
    return _model([helper.make_node("If", ["flag"], ["y"], then_branch=then_b, else_branch=else_b)],
                  [info("x", F, [2])], [info("y", F, [2])],
                  [("flag", np.array(True)), ("k", np.array([1.0, 2.0], np.float32))])


def test_if_on_a_constant_is_not_folded():
    x = np.array([3.0, 4.0], np.float32)
    assert [s.node.op_type for s in _numba(_constant_if(False)).plan.steps] == ["If"]
    np.testing.assert_array_equal(_both(_constant_if(False), {"x": x})[0][1], x)


def test_branch_may_output_an_outer_value():
    """onnxruntime refuses this (it wants an Identity); the ONNX spec and the numba engine allow it."""
    x = np.array([3.0, 4.0], np.float32)
    (y,) = _numba(_constant_if(True)).run(None, {"x": x})
    np.testing.assert_array_equal(y, x)


def test_trip_count_without_condition_input():
    """Loop(M, "", v): onnxruntime still stops when the body's condition output turns false."""
    feed = {"v": np.array([0.5, 1.0], np.float32), "cond": np.array(True), "limit": np.array(10.0, np.float32),
            "M": np.array(8, np.int64)}
    model = onnx.load_from_string(_while_loop(True))
    model.graph.node[0].input[1] = ""
    del model.graph.input[1]
    feed.pop("cond")
    _both(model.SerializeToString(), feed)


def _endless_loop() -> bytes:
    """Loop("", cond) whose condition stays true for every input: only a bounded caller may run it."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body", [info("i", I64, []), info("c_in", B, []), info("v_in", F, [2])],
        [info("c_out", B, []), info("v_out", F, [2])])
    nodes = [helper.make_node("Abs", ["v"], ["a"]), helper.make_node("ReduceSum", ["a"], ["s"], keepdims=0),
             helper.make_node("GreaterOrEqual", ["s", "zero"], ["go"]),  # always true
             helper.make_node("Loop", ["", "go", "v"], ["y"], body=body)]
    return _model(nodes, [info("v", F, [2])], [info("y", F, [2])], [("zero", np.float32(0))])


def test_session_creation_does_not_run_a_loop_without_trip_count():
    """Priming and the thread measurement use a synthetic input, which might never end such a loop."""
    import threading

    made = []
    worker = threading.Thread(target=lambda: made.append(_numba(_endless_loop())), daemon=True)
    worker.start()
    worker.join(60)
    assert made, "session creation ran the endless Loop"
    assert made[0].threads == 1  # not measured on the synthetic input (1 thread on a 1-CPU machine anyway)
