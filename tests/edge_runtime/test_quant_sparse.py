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
