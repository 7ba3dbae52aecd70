"""The QLinearConv / QLinearMatMul builders run the sparse int8 kernels and equal the plain ops."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.graph import Node
from edge_runtime.ops.quant_linear import QLinearConv, QLinearMatMul
from edge_runtime.ops.quant_sparse import qlinear_conv_builder, qlinear_matmul_builder


def _sparse(rng, shape, dtype, zp, density):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    x[rng.random(shape) >= density] = zp
    return x


@pytest.mark.parametrize("dtype,zp", [(np.uint8, 0), (np.int8, -128), (np.uint8, 7)])
@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]}, {"strides": [2, 2]}, {"auto_pad": "SAME_UPPER"},
                                   {"pads": [2, 2, 2, 2], "dilations": [2, 2]}])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_builder_equals_qlinearconv(dtype, zp, attrs, with_bias):
    rng = np.random.default_rng(0)
    x = _sparse(rng, (2, 6, 9, 8), dtype, zp, 0.2)
    w = rng.integers(-127, 128, (20, 6, 3, 3)).astype(np.int8)
    consts = [None, np.float32(0.05), np.array(zp, dtype), w, rng.uniform(0.001, 0.01, 20).astype(np.float32),
              np.zeros(20, np.int8), np.float32(0.2), np.array(131, np.uint8)]
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if with_bias:
        consts.append(rng.integers(-5000, 5000, 20).astype(np.int32))
        names.append("b")
    node = Node("QLinearConv", tuple(names), ("y",), attrs)
    run = qlinear_conv_builder(node, consts, None)
    assert run is not None
    got = run(x, *consts[1:])
    np.testing.assert_array_equal(got, QLinearConv(x, *consts[1:], **attrs))


def test_conv_builder_declines_what_the_kernels_do_not_cover():
    w = np.zeros((4, 2, 3, 3), np.int8)
    consts = [None, np.float32(1), np.uint8(0), w, np.float32(1), np.int8(0), np.float32(1), np.uint8(0)]
    names = ("x", "xs", "xz", "w", "ws", "wz", "ys", "yz")
    assert qlinear_conv_builder(Node("QLinearConv", names, ("y",), {"group": 2}), consts, None) is None
    assert qlinear_conv_builder(Node("QLinearConv", names, ("y",), {}), consts[:3] + [None] + consts[4:], None) is None
    nonzero_wzp = consts[:5] + [np.int8(3)] + consts[6:]
    assert qlinear_conv_builder(Node("QLinearConv", names, ("y",), {}), nonzero_wzp, None) is None


@pytest.mark.parametrize("a_shape", [(5, 40), (2, 3, 40)])
def test_matmul_builder_equals_qlinearmatmul(a_shape):
    rng = np.random.default_rng(1)
    a = _sparse(rng, a_shape, np.uint8, 0, 0.1)
    b = rng.integers(-127, 128, (40, 70)).astype(np.int8)
    consts = [None, np.float32(0.05), np.uint8(0), b, rng.uniform(0.001, 0.01, 70).astype(np.float32),
              np.zeros(70, np.int8), np.float32(0.3), np.int8(-3)]
    node = Node("QLinearMatMul", ("a", "as", "az", "b", "bs", "bz", "ys", "yz"), ("y",))
    run = qlinear_matmul_builder(node, consts, None)
    assert run is not None
    np.testing.assert_array_equal(run(a, *consts[1:]), QLinearMatMul(a, *consts[1:]))


def _conv_consts(rng, cin):
    w = rng.integers(-127, 128, (8, cin, 3, 3)).astype(np.int8)
    return [None, np.float32(0.05), np.array(0, np.uint8), w, rng.uniform(0.001, 0.01, 8).astype(np.float32),
            np.zeros(8, np.int8), np.float32(0.2), np.array(131, np.uint8)]


@pytest.mark.parametrize("cin,kernel", [(6, "sparse"), (2, "dense")])  # reduction 54 vs 18 (<= 32: dense conv)
def test_builder_runs_report_their_kernel_and_the_plain_fallback(cin, kernel):
    rng = np.random.default_rng(2)
    consts = _conv_consts(rng, cin)
    run = qlinear_conv_builder(Node("QLinearConv", ("x", "xs", "xz", "w", "ws", "wz", "ys", "yz"), ("y",), {}),
                               consts, None)
    x = _sparse(rng, (1, cin, 9, 8), np.uint8, 0, 0.2)
    run(x, *consts[1:])
    assert run.last_kernel == kernel
    run(x.view(np.int8), *consts[1:])  # an int8 input against a uint8 zero point: the plain op runs it
    assert run.last_kernel == "plain"
    run(x, *consts[1:])
    assert run.last_kernel == kernel


def test_matmul_builder_reports_plain_when_it_falls_back():
    rng = np.random.default_rng(3)
    b = rng.integers(-127, 128, (40, 70)).astype(np.int8)
    consts = [None, np.float32(0.05), np.uint8(0), b, np.float32(0.01), np.int8(0), np.float32(0.3), np.int8(-3)]
    run = qlinear_matmul_builder(Node("QLinearMatMul", ("a", "as", "az", "b", "bs", "bz", "ys", "yz"), ("y",)),
                                 consts, None)
    assert run.last_kernel == "plain"  # no call yet
    run(_sparse(rng, (5, 40), np.uint8, 0, 0.1), *consts[1:])
    assert run.last_kernel == "sparse"
    run(_sparse(rng, (40,), np.uint8, 0, 0.1), *consts[1:])  # 1-D: the plain op
    assert run.last_kernel == "plain"


@pytest.mark.usefixtures("numba_engine")
def test_run_with_stats_names_the_int8_kernel():
    from onnx import TensorProto, helper, numpy_helper

    from edge_runtime import InferenceSession

    rng = np.random.default_rng(4)
    consts = _conv_consts(rng, 6)
    names = ["xs", "xz", "w", "ws", "wz", "ys", "yz"]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, consts[1:])]
    g = helper.make_graph([helper.make_node("QLinearConv", ["x", *names], ["y"], name="qconv", pads=[1, 1, 1, 1])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 6, 9, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    sess = InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                            providers=["EdgeRuntimeExecutionProvider"])
    x = _sparse(rng, (1, 6, 9, 8), np.uint8, 0, 0.2)
    (y,), stats = sess.run_with_stats(None, {"x": x})
    np.testing.assert_array_equal(y, QLinearConv(x, *consts[1:], pads=[1, 1, 1, 1]))
    assert [(n.name, n.kernel) for n in stats.nodes] == [("qconv", "sparse")]
