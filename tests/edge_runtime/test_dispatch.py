"""Per-layer dense/sparse dispatch inside whole models: same outputs in every mode, right kernel choice."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime import InferenceSession

# every test here inspects the numba engine's dispatchers
pytestmark = pytest.mark.usefixtures("numba_engine")


def _mlp(sizes=(64, 256, 256, 64), bias_shift=-1.5, seed=0) -> onnx.ModelProto:
    """Linear+ReLU stack (MatMul+Add+Relu); a negative bias shift makes hidden activations mostly zero."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.full(n, bias_shift if i < len(sizes) - 2 else 0.0, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}")]
        prev = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _cnn(seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.full(16, -0.8, np.float32), "b1")
    w2 = numpy_helper.from_array((rng.standard_normal((8, 16, 3, 3)) * 0.2).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv2")]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])], [w1, b1, w2])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_modes_agree(make, batch):
    model = make()
    shape = [d.dim_value or batch for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    outs = {m: InferenceSession(model, sparsity=m).run(None, {"x": x})[0] for m in ("off", "auto", "force")}
    scale = np.abs(outs["off"]).max()
    for mode in ("auto", "force"):
        np.testing.assert_allclose(outs[mode], outs["off"], atol=1e-5 * scale, rtol=1e-5)


def test_auto_picks_sparse_for_sparse_inputs_and_dense_for_the_first_layer():
    sess = InferenceSession(_mlp(bias_shift=-1.5), sparsity="auto")
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    _, stats = sess.run_with_stats(None, {"x": x})
    by_name = {n.name: n for n in stats.nodes}
    assert by_name["fc0"].kernel == "plain"          # input is the raw feature vector: not a candidate
    hidden = [by_name["fc1"], by_name["fc2"]]
    for node in hidden:
        assert node.density is not None and node.density < 0.5
        assert node.kernel == "sparse"


def test_auto_stays_dense_above_crossover():
    # a positive bias shift: nearly every hidden activation is nonzero, above every crossover
    sess = InferenceSession(_mlp(bias_shift=3.0), sparsity="auto")
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    _, stats = sess.run_with_stats(None, {"x": x})
    fc1 = next(n for n in stats.nodes if n.name == "fc1")
    assert fc1.density > 0.9 and fc1.kernel == "dense"


def test_dense_inputs_stop_the_density_count_early_but_stats_stay_exact():
    sess = InferenceSession(_mlp(bias_shift=3.0), sparsity="auto")
    x = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)
    fc1 = next(s.fn for s in sess.plan.steps if s.node.name == "fc1")
    sess.run(None, {"x": x})
    estimate = fc1.last_density
    _, stats = sess.run_with_stats(None, {"x": x})
    exact = next(n.density for n in stats.nodes if n.name == "fc1")
    assert fc1.last_kernel == "dense" and exact > 0.9 and estimate > 0.3
    assert exact == pytest.approx(fc1.last_density)


def test_off_never_uses_sparse_and_force_always_does():
    x = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
    _, off = InferenceSession(_mlp(), sparsity="off").run_with_stats(None, {"x": x})
    assert all(n.kernel != "sparse" for n in off.nodes)
    _, force = InferenceSession(_mlp(), sparsity="force").run_with_stats(None, {"x": x})
    assert {n.name for n in force.nodes if n.kernel == "sparse"} == {"fc0", "fc1", "fc2"}


def test_profile_crossover_is_used(tmp_path):
    import dataclasses

    import device_profiles

    base = device_profiles.load_profile("raspberry-pi-4")
    never = dataclasses.replace(base, runtime=dataclasses.replace(
        base.runtime, sparse_crossover=device_profiles.SparseCrossover(gemv=0.01, gemm=0.01, conv=0.01)))
    x = np.random.default_rng(5).standard_normal((1, 64)).astype(np.float32)
    model = _mlp(bias_shift=0.0)  # about half the hidden activations are zero: above a 0.01 crossover
    _, stats = InferenceSession(model, profile=never).run_with_stats(None, {"x": x})
    assert [n.kernel for n in stats.nodes if n.density is not None] == ["dense", "dense"]
    _, stats = InferenceSession(model, profile="raspberry-pi-4").run_with_stats(None, {"x": x})
    assert [n.kernel for n in stats.nodes if n.density is not None] == ["sparse", "sparse"]  # gemv crossover 0.75


def test_fatrelu_threshold_is_fused_and_its_zeros_reach_the_next_layer():
    """Conv -> Where(y >= t, y, 0) (FATReLU as exported) becomes one FusedConv with a threshold epilogue."""
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((8, 16, 3, 3)) * 0.2).astype(np.float32), "w2")
    t = numpy_helper.from_array(np.array(0.4, np.float32), "t")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("GreaterOrEqual", ["c1", "t"], ["ge"], name="ge"),
             helper.make_node("Where", ["ge", "c1", "zero"], ["f1"], name="where"),
             helper.make_node("Conv", ["f1", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    g = helper.make_graph(nodes, "fat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 10, 10])], [w1, w2, t, zero])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = InferenceSession(model, sparsity="force")
    assert [s.node.op_type for s in sess.plan.steps] == ["FusedConv", "FusedConv"]
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    ref = InferenceSession(model, sparsity="off").run(None, {"x": x})[0]
    from edge_runtime import ORT_DISABLE_ALL, SessionOptions

    opts = SessionOptions()
    opts.graph_optimization_level = ORT_DISABLE_ALL
    unfused = InferenceSession(model, opts).run(None, {"x": x})[0]
    np.testing.assert_allclose(ref, unfused, rtol=1e-5, atol=1e-5)
    (out,), stats = sess.run_with_stats(None, {"x": x})
    np.testing.assert_allclose(out, unfused, rtol=1e-5, atol=1e-5)
    assert stats.nodes[1].kernel == "sparse" and stats.nodes[1].density < 0.6


def test_auto_keeps_tiny_layers_dense():
    """A 256->8 layer's whole multiply is cheaper than a density check and a kernel call."""
    sess = InferenceSession(_mlp(sizes=(64, 256, 8)), sparsity="auto")
    x = np.random.default_rng(8).standard_normal((1, 64)).astype(np.float32)
    _, stats = sess.run_with_stats(None, {"x": x})
    assert [n.kernel for n in stats.nodes if n.name.startswith("fc")] == ["plain", "plain"]
    _, forced = InferenceSession(_mlp(sizes=(64, 256, 8)), sparsity="force").run_with_stats(None, {"x": x})
    assert [n.kernel for n in forced.nodes if n.name.startswith("fc")] == ["sparse", "sparse"]


def test_narrow_convs_need_a_lower_density_for_the_sparse_kernel():
    from edge_runtime.graph import Node
    from edge_runtime.prepared import prepare

    def kernel(cout, cin):
        w = np.zeros((cout, cin, 3, 3), np.float32)
        return prepare(Node("FusedConv", ("x", "w"), ("y",), {"pads": [1, 1, 1, 1]}), {"w": w})

    assert kernel(128, 128).crossover_scale == 1.0 and kernel(128, 64).crossover_scale == 1.0
    assert kernel(64, 32).crossover_scale == pytest.approx(0.5 ** 0.5)  # 0.35 -> 0.25 for a 32 -> 64 conv
    assert kernel(64, 64).crossover_scale == pytest.approx(0.5 ** 0.5)  # the direct dense kernel, no Winograd factor
    assert kernel(256, 256).crossover_scale == 0.5  # two output tiles per pixel


def test_1x1_convs_are_sparse_candidates_only_where_the_kernel_can_win():
    from edge_runtime.ops.conv_layer import conv_crossover_scale

    assert conv_crossover_scale((256, 256, 1, 1)) == pytest.approx(2 / 3)  # 0.30 -> 0.2
    assert conv_crossover_scale((128, 128, 1, 1)) == pytest.approx(2 / 3 / 4)  # 0.05
    assert conv_crossover_scale((64, 256, 1, 1)) == 0.0  # Cout < 128: slower at every density
    assert conv_crossover_scale((128, 32, 1, 1)) == 0.0  # Cin < 64
    w = numpy_helper.from_array(np.ones((64, 256, 1, 1), np.float32), "w")
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])],
                          "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.zeros((1, 256, 4, 4), np.float32)  # even an all-zero input stays dense in auto
    _, stats = InferenceSession(model, sparsity="auto").run_with_stats(None, {"x": x})
    assert [n.kernel for n in stats.nodes if n.op_type == "FusedConv"] == ["plain"]
    _, stats = InferenceSession(model, sparsity="force").run_with_stats(None, {"x": x})
    assert [n.kernel for n in stats.nodes if n.op_type == "FusedConv"] == ["sparse"]
