"""Sparse Conv kernel against a float64 numpy reference and the ONNX reference evaluator."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels import activation
from edge_runtime.kernels.sparse_conv import (
    dense_conv2d,
    prepare_conv_weights,
    sparse_conv1x1_nchw,
    sparse_conv2d,
)
from tests.edge_runtime.kernels.test_sparse_matmul import ACTS, check, sparse_input


def conv_reference(x, w, b, strides, pads, dils, act, p0, p1):
    """Direct float64 convolution; returns (y, tol, ok) like the matmul reference."""
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dils[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - dils[1] * (kw - 1) - 1) // strides[1] + 1
    pre = np.zeros((n, co, oh, ow))
    mag = np.zeros((n, co, oh, ow))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dils[0], j * dils[1]
            patch = xp[:, :, r0:r0 + strides[0] * (oh - 1) + 1:strides[0], c0:c0 + strides[1] * (ow - 1) + 1:strides[1]]
            pre += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
            mag += np.einsum("nchw,oc->nohw", np.abs(patch), np.abs(w[:, :, i, j]))
    if b is not None:
        pre += b.reshape(1, -1, 1, 1)
        mag += np.abs(b).reshape(1, -1, 1, 1)
    tol = 1e-5 * mag + 1e-6
    y = activation.apply_activation(pre.astype(np.float32), act, p0, p1)
    ok = np.ones_like(y, dtype=bool) if act != activation.THRESHOLD_RELU else np.abs(pre - p0) > tol
    return y, tol, ok


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 2), cin=st.integers(1, 6), cout=st.integers(1, 20),
    h=st.integers(1, 8), wd=st.integers(1, 8), kh=st.integers(1, 5), kw=st.integers(1, 5),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4), dils=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dens=st.sampled_from([0.0, 0.1, 0.5, 1.0]), act=st.sampled_from(ACTS),
    with_bias=st.booleans(), noncontig=st.booleans(), seed=st.integers(0, 2**16),
)
def test_sparse_conv_matches_reference(n, cin, cout, h, wd, kh, kw, strides, pads, dils, dens, act,
                                       with_bias, noncontig, seed):
    assume(h + pads[0] + pads[2] >= dils[0] * (kh - 1) + 1)
    assume(wd + pads[1] + pads[3] >= dils[1] * (kw - 1) + 1)
    rng = np.random.default_rng(seed)
    x = sparse_input(rng, (n, cin, h, wd), dens)
    w = rng.standard_normal((cout, cin, kh, kw)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if with_bias else None
    ref, tol, ok = conv_reference(x, w, b, strides, pads, dils, *act)
    prepared = prepare_conv_weights(w, 16)  # Cout up to 20 -> two tiles, the last padded
    feed = np.repeat(x, 2, axis=3)[..., ::2] if noncontig else x
    check(sparse_conv2d(feed, prepared, b, strides, pads, dils, *act), ref, tol, ok)
    check(dense_conv2d(feed, prepared, b, strides, pads, dils, *act), ref, tol, ok)


def onnx_conv(x, w, b, strides, pads, dils):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(strides), pads=list(pads),
                            dilations=list(dils))
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("parallel", [False, True])
def test_conv_matches_onnx_reference_evaluator(parallel):
    rng = np.random.default_rng(3)
    x = sparse_input(rng, (2, 8, 11, 9), 0.2)
    w = rng.standard_normal((24, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    args = ((2, 1), (1, 0, 2, 1), (1, 2))
    expected = onnx_conv(x, w, b, *args)
    y = sparse_conv2d(x, prepare_conv_weights(w), b, *args, activation.NONE, parallel=parallel)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cout,hw", [(40, (7, 9)), (136, (5, 8)), (16, (4, 4))])
def test_conv_output_store_full_and_partial_blocks(cout, hw):
    """The 16-pixel x 16-channel register transposes and the scalar tails, across tiles."""
    rng = np.random.default_rng(cout)
    x = sparse_input(rng, (1, 5) + hw, 0.3)
    w = rng.standard_normal((cout, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1))
    y = sparse_conv2d(x, prepare_conv_weights(w), b, *args, activation.NONE)
    np.testing.assert_allclose(y, onnx_conv(x, w, b, *args), rtol=1e-5, atol=1e-4)


def test_conv1x1_is_per_pixel_matmul():
    rng = np.random.default_rng(4)
    x = sparse_input(rng, (1, 10, 5, 6), 0.3)
    w = rng.standard_normal((7, 10, 1, 1)).astype(np.float32)
    y = sparse_conv1x1_nchw(x, prepare_conv_weights(w), None, activation.RELU)
    ref = np.maximum(np.einsum("oc,chw->ohw", w[:, :, 0, 0], x[0]), 0)[None]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="1x1"):
        sparse_conv1x1_nchw(x, prepare_conv_weights(np.ones((2, 10, 3, 3), np.float32)), None)


def test_conv_bad_arguments_raise_project_errors():
    p = prepare_conv_weights(np.ones((4, 3, 3, 3), np.float32))
    with pytest.raises(InvalidInputError, match="Cin=3"):
        sparse_conv2d(np.ones((1, 2, 5, 5), np.float32), p, None)
    with pytest.raises(InvalidInputError, match="empty"):
        sparse_conv2d(np.ones((1, 3, 2, 2), np.float32), p, None)
    with pytest.raises(InvalidArgumentError, match="pads"):
        sparse_conv2d(np.ones((1, 3, 5, 5), np.float32), p, None, (1, 1), (1, 1))
    with pytest.raises(InvalidArgumentError, match="Cout, Cin"):
        prepare_conv_weights(np.ones((3, 3, 3), np.float32))
