"""InferenceSession: onnxruntime-shaped API and the errors users see for bad models and inputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime import (InferenceSession, InvalidArgumentError, InvalidInputError, InvalidModelError,
                          SessionOptions, UnsupportedDTypeError, UnsupportedOpError)
from tests.edge_runtime.engine.graphs import FreedBytes


def _mlp_model(batch: str | int = "N") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])], [w1, b1])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"author": "tests"})
    return model


def _reference(x: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return np.maximum(x @ inits["w1"] + inits["b1"], 0)


@pytest.mark.parametrize("providers", [["CPUExecutionProvider"], ["EdgeRuntimeExecutionProvider"]])
def test_handed_bytes_are_owned_by_the_session_and_let_go(providers, monkeypatch):
    """A session built from HandedBytes empties the holder and keeps no reference to the bytes (a
    bytes argument stays with the caller through the creation); the holder cannot be used twice
    unless it can read the model again."""
    pytest.importorskip("onnxruntime")
    from edge_runtime.onnx_io import HandedBytes

    model = _mlp_model()
    monkeypatch.setattr(FreedBytes, "freed", False)
    handed = HandedBytes(FreedBytes(model.SerializeToString()), "'m.onnx'")
    sess = InferenceSession(handed, providers=providers)
    assert FreedBytes.freed
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], _reference(x, model), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidModelError, match="bytes of 'm.onnx' were already handed to a session"):
        InferenceSession(handed, providers=providers)
    again = HandedBytes(model.SerializeToString(), "'m.onnx'", again=model.SerializeToString)
    InferenceSession(again, providers=providers)
    np.testing.assert_allclose(InferenceSession(again, providers=providers).run(None, {"x": x})[0],
                               _reference(x, model), rtol=1e-5, atol=1e-6)


def test_run_matches_reference_from_path_bytes_and_proto(tmp_path):
    model = _mlp_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    for source in (str(path), path, model.SerializeToString(), model):
        (y,) = InferenceSession(source).run(None, {"x": x})
        np.testing.assert_allclose(y, _reference(x, model), rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("numba_engine")
def test_matmul_add_relu_is_fused_into_one_step():
    sess = InferenceSession(_mlp_model())
    assert [s.node.op_type for s in sess.plan.steps] == ["FusedMatMul"]


def test_external_data_next_to_model(tmp_path):
    model = _mlp_model()
    path = tmp_path / "ext.onnx"
    saved = onnx.ModelProto()
    saved.CopyFrom(model)  # onnx.save marks the tensors it writes out as external: keep `model` intact
    onnx.save(saved, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(InferenceSession(path).run(None, {"x": x})[0], _reference(x, model), rtol=1e-5)


def test_missing_external_data_is_a_clear_error(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(_mlp_model(), path, save_as_external_data=True, location="w.data", size_threshold=0)
    (tmp_path / "w.data").unlink()
    with pytest.raises(InvalidModelError, match="external data"):
        InferenceSession(path)


def test_metadata_inputs_outputs_like_onnxruntime():
    sess = InferenceSession(_mlp_model())
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("x", ["N", 4], "tensor(float)")
    assert (out.name, out.shape, out.type) == ("y", ["N", 8], "tensor(float)")
    assert sess.get_modelmeta().custom_metadata_map == {"author": "tests"}
    # what runs it: edge_runtime's kernels on the numba engine, onnxruntime for this dense MLP otherwise
    want = {"numba": ["EdgeRuntimeExecutionProvider"], "onnxruntime": ["CPUExecutionProvider"]}
    assert sess.get_providers() == want[sess.dense_engine]


def test_agrees_with_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = _mlp_model()
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(InferenceSession(model).run(None, {"x": x})[0], ref[0], rtol=1e-5, atol=1e-6)


def test_supported_ops_lists_default_domain_ops():
    ops = edge_runtime.supported_ops()
    assert ("", "Relu") in ops and ("", "MatMul") in ops
    assert all(domain != "ai.edge_runtime" for domain, _ in ops)


# -- bad models -----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(InvalidModelError, match="not found"):
        InferenceSession(tmp_path / "nope.onnx")


def test_truncated_file(tmp_path):
    data = _mlp_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match="truncated"):
        InferenceSession(path)


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "text.onnx"
    path.write_text("hello, this is not a model")
    with pytest.raises(InvalidModelError):
        InferenceSession(path)


def test_wrong_source_type():
    with pytest.raises(InvalidModelError, match="expected a file path"):
        InferenceSession(12345)


def test_unsupported_op_names_op_domain_opset_and_lists_supported():
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 3)])
    with pytest.raises(UnsupportedOpError) as info:
        InferenceSession(model)
    msg = str(info.value)
    assert "Frobnicate" in msg and "com.example" in msg and "opset 3" in msg and "supported_ops()" in msg


def test_cyclic_graph():
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2"),
             helper.make_node("Add", ["x", "a"], ["y"], name="n3")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(InvalidModelError, match="cycle"):
        InferenceSession(helper.make_model(g))


def test_missing_initializer_names_tensor_and_node():
    node = helper.make_node("MatMul", ["x", "weights"], ["y"], name="fc")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    with pytest.raises(InvalidModelError, match="'weights'.*missing initializer"):
        InferenceSession(helper.make_model(g))


@pytest.mark.usefixtures("numba_engine")
def test_float64_model_runs_and_string_model_rejected_with_fix():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    (y,) = InferenceSession(helper.make_model(g)).run(None, {"x": np.array([-1.0, 2.0])})
    assert y.dtype == np.float64 and y.tolist() == [0.0, 2.0]
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.STRING, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.STRING, [1])])
    with pytest.raises(UnsupportedDTypeError, match="float32"):
        InferenceSession(helper.make_model(g))


# -- bad inputs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sess():
    return InferenceSession(_mlp_model(batch="N"))


def test_missing_input_like_onnxruntime(sess):
    with pytest.raises(InvalidInputError, match=r"Required inputs \(\['x'\]\) are missing from input feed \(\['X'\]\)"):
        sess.run(None, {"X": np.ones((1, 4), np.float32)})


def test_unexpected_input(sess):
    with pytest.raises(InvalidInputError, match="unexpected name.*'extra'"):
        sess.run(None, {"x": np.ones((1, 4), np.float32), "extra": np.ones(1, np.float32)})


def test_wrong_dtype_names_input_and_fix(sess):
    with pytest.raises(InvalidInputError, match=r"'x'.*tensor\(double\).*tensor\(float\).*astype"):
        sess.run(None, {"x": np.ones((1, 4))})


def test_wrong_rank(sess):
    with pytest.raises(InvalidInputError, match="rank 1"):
        sess.run(None, {"x": np.ones(4, np.float32)})


def test_wrong_static_dim(sess):
    with pytest.raises(InvalidInputError, match="dimension 1 must be 4"):
        sess.run(None, {"x": np.ones((1, 5), np.float32)})


def test_list_instead_of_array(sess):
    with pytest.raises(InvalidInputError, match="numpy array"):
        sess.run(None, {"x": [[1.0, 2.0, 3.0, 4.0]]})


def test_feed_not_a_dict(sess):
    with pytest.raises(InvalidInputError, match="dict"):
        sess.run(None, [np.ones((1, 4), np.float32)])


def test_unknown_output_name(sess):
    with pytest.raises(InvalidArgumentError, match="unknown output"):
        sess.run(["z"], {"x": np.ones((1, 4), np.float32)})


@pytest.mark.parametrize("providers", [["EdgeRuntimeExecutionProvider"], ["CPUExecutionProvider"]])
def test_empty_output_names_mean_every_output(providers):
    """``run([], feed)`` returns every output, as onnxruntime's does, on both engines."""
    pytest.importorskip("onnxruntime")
    x = np.ones((2, 4), np.float32)
    got = InferenceSession(_mlp_model(), providers=providers).run([], {"x": x})
    assert len(got) == 1
    np.testing.assert_allclose(got[0], _reference(x, _mlp_model()), rtol=1e-5, atol=1e-6)


def test_dynamic_batch(sess):
    for n in (1, 4, 7):
        assert sess.run(["y"], {"x": np.ones((n, 4), np.float32)})[0].shape == (n, 8)


def test_bad_options():
    with pytest.raises(InvalidArgumentError, match="sparsity"):
        InferenceSession(_mlp_model(), sparsity="sometimes")
    opts = SessionOptions()
    opts.intra_op_num_threads = -2
    with pytest.raises(InvalidArgumentError, match="intra_op_num_threads"):
        InferenceSession(_mlp_model(), opts)
    with pytest.raises(InvalidArgumentError, match="profile"):
        InferenceSession(_mlp_model(), profile="no-such-device")


def test_profile_sets_threads():
    sess = InferenceSession(_mlp_model(), profile="raspberry-pi-4")
    assert sess.threads == sess.profile.runtime.threads
    opts = SessionOptions()
    opts.intra_op_num_threads = 1
    assert InferenceSession(_mlp_model(), opts, profile="raspberry-pi-4").threads == 1


@pytest.mark.usefixtures("numba_engine")
def test_run_with_stats_reports_each_node():
    outputs, stats = InferenceSession(_mlp_model(batch="N")).run_with_stats(None, {"x": np.ones((2, 4), np.float32)})
    assert outputs[0].shape == (2, 8)
    assert [n.op_type for n in stats.nodes] == ["FusedMatMul"]
    assert stats.nodes[0].output_shape == (2, 8) and stats.total_seconds >= 0


@pytest.mark.usefixtures("numba_engine")
def test_disable_optimizations_keeps_nodes():
    opts = SessionOptions()
    opts.graph_optimization_level = edge_runtime.ORT_DISABLE_ALL
    sess = InferenceSession(_mlp_model(), opts)
    assert [s.node.op_type for s in sess.plan.steps] == ["MatMul", "Add", "Relu"]
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], InferenceSession(_mlp_model()).run(None, {"x": x})[0],
                               rtol=1e-6)


def test_outputs_never_alias_inputs_or_weights():
    """Reshape returns a numpy view; the caller must get an array it can modify without side effects."""
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([2, 2], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"]), helper.make_node("Reshape", ["w", "shape"], ["z"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 2])], [w, shape])
    sess = InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.ones(4, np.float32)
    y, z = sess.run(None, {"x": x})
    y[:] = 7
    z[:] = 7
    assert (x == 1).all()
    np.testing.assert_array_equal(sess.run(["z"], {"x": x})[0], np.arange(4, dtype=np.float32).reshape(2, 2))


@pytest.mark.parametrize("providers", [["EdgeRuntimeExecutionProvider"], ["CPUExecutionProvider"]])
def test_an_output_that_is_an_input_is_a_copy_like_onnxruntime(providers):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Identity", ["x"], ["same"]), helper.make_node("Relu", ["x"], ["y"])]
    outs = [x, helper.make_tensor_value_info("same", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 17)])
    a = np.array([1.0, -2.0], np.float32)
    got = InferenceSession(model.SerializeToString(), providers=providers).run(None, {"x": a})
    for out in got:
        assert not np.shares_memory(out, a)
    got[0][0] = 5.0  # the caller's input is not changed through an output
    assert a[0] == 1.0
