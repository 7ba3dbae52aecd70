"""Zero-skipping int8 kernels, exactly against an int64 numpy reference (and the QLinear* ops)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels.sparse_int8 import (prepare_int8_weights, requant_params, sparse_gemv_int8,
                                              sparse_matmul_int8)
from edge_runtime.kernels.sparse_int8_conv import (pixel_rows, prepare_int8_conv, sparse_conv1x1_int8,
                                                   sparse_conv_int8)
from edge_runtime.ops.quant_linear import QLinearConv, QLinearMatMul

DTYPES = {"uint8": (np.uint8, 0, 255), "int8": (np.int8, -128, 127)}


def activations(rng, shape, dtype, zp, density):
    """Random int8/uint8 values with about ``density`` of them different from the zero point."""
    dt, lo, hi = DTYPES[dtype]
    x = rng.integers(lo, hi + 1, shape).astype(np.int64)
    x[x == zp] = lo if zp != lo else hi  # active entries differ from zp
    x[rng.random(shape) >= density] = zp
    return x.astype(dt)


def ref_requant(acc, mult, yzp, dtype, relu=False):
    y = np.rint(acc.astype(np.float32) * mult) + np.float32(yzp)
    lo, hi = DTYPES[dtype][1:]
    return np.clip(y, max(lo, yzp) if relu else lo, hi).astype(DTYPES[dtype][0])


def ref_conv(x, w, zp, strides, pads, dilations):
    """int64 direct convolution of x - zp (padding = zp) with w."""
    xc = np.pad(x.astype(np.int64) - zp, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    m, _, kh, kw = w.shape
    n, _, hp, wp = xc.shape
    oh = (hp - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wp - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow), np.int64)
    for a in range(kh):
        for b in range(kw):
            patch = xc[:, :, a * dilations[0]:, b * dilations[1]:][:, :, :oh * strides[0]:strides[0],
                                                                      :ow * strides[1]:strides[1]]
            y += np.einsum("nchw,mc->nmhw", patch, w[:, :, a, b].astype(np.int64))
    return y


dtype_zp = st.sampled_from(["uint8", "int8"]).flatmap(
    lambda d: st.tuples(st.just(d), st.sampled_from([DTYPES[d][1], 0, DTYPES[d][2], 3 if d == "uint8" else -7])))
densities = st.sampled_from([0.0, 0.05, 0.3, 1.0])


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 5), k=st.integers(1, 90), n=st.integers(1, 260), dz=dtype_zp, density=densities,
       seed=st.integers(0, 2**16))
def test_matmul_and_gemv_accumulators_are_exact(m, k, n, dz, density, seed):
    dtype, zp = dz
    rng = np.random.default_rng(seed)
    x = activations(rng, (m, k), dtype, zp, density)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    prep = prepare_int8_weights(w)
    ref = (x.astype(np.int64) - zp) @ w.astype(np.int64)
    got = sparse_matmul_int8(x, zp, prep)
    assert got.dtype == np.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(sparse_gemv_int8(x[0], zp, prep), ref[0])


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 70), n=st.integers(1, 100), dz=dtype_zp, density=densities, relu=st.booleans(),
       out=st.sampled_from(["uint8", "int8"]), seed=st.integers(0, 2**16))
def test_requantized_matmul_matches_qlinearmatmul(k, n, dz, density, relu, out, seed):
    dtype, zp = dz
    rng = np.random.default_rng(seed)
    x = activations(rng, (3, k), dtype, zp, density)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    xs, ys = np.float32(0.02), np.float32(rng.uniform(0.05, 2.0))
    ws = rng.uniform(0.001, 0.02, n).astype(np.float32)
    yzp = int(rng.integers(*DTYPES[out][1:]))
    rq = requant_params(xs, ws, ys, yzp, n, relu=relu, out_dtype=DTYPES[out][0])
    got = sparse_matmul_int8(x, zp, prepare_int8_weights(w), rq)
    want = QLinearMatMul(x, xs, np.array(zp, x.dtype), w, ws, np.zeros(n, np.int8), ys, np.array(yzp, DTYPES[out][0]))
    if relu:
        want = np.maximum(want, np.array(yzp, want.dtype))
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sparse_gemv_int8(x[1], zp, prepare_int8_weights(w), rq), want[1])


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 20), m=st.integers(1, 200), hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       kernel=st.sampled_from([(3, 3), (1, 1), (2, 3), (5, 5)]), stride=st.sampled_from([1, 2]),
       pad=st.sampled_from([0, 1, 2]), dil=st.sampled_from([1, 2]), dz=dtype_zp, density=densities,
       seed=st.integers(0, 2**16))
def test_conv_accumulators_are_exact(c, m, hw, kernel, stride, pad, dil, dz, density, seed):
    dtype, zp = dz
    kh, kw = kernel
    if hw[0] + 2 * pad < (kh - 1) * dil + 1 or hw[1] + 2 * pad < (kw - 1) * dil + 1:
        return  # the window does not fit
    rng = np.random.default_rng(seed)
    x = activations(rng, (2, c, *hw), dtype, zp, density)
    w = rng.integers(-128, 128, (m, c, kh, kw)).astype(np.int8)
    geom = ((stride, stride), (pad, pad, pad, pad), (dil, dil))
    got = sparse_conv_int8(x, zp, prepare_int8_conv(w), *geom)
    want = ref_conv(x, w, zp, *geom)
    assert got.dtype == np.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@settings(max_examples=20, deadline=None)
@given(c=st.integers(1, 24), m=st.integers(1, 40), dz=dtype_zp, density=densities, relu=st.booleans(),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_requantized_conv_matches_qlinearconv(c, m, dz, density, relu, with_bias, seed):
    dtype, zp = dz
    rng = np.random.default_rng(seed)
    x = activations(rng, (1, c, 7, 6), dtype, zp, density)
    w = rng.integers(-127, 128, (m, c, 3, 3)).astype(np.int8)
    bias = rng.integers(-3000, 3000, m).astype(np.int32) if with_bias else None
    xs, ys, ws = np.float32(0.03), np.float32(0.5), rng.uniform(0.001, 0.02, m).astype(np.float32)
    rq = requant_params(xs, ws, ys, 128, m, bias=bias, relu=relu, out_dtype=np.uint8)
    got = sparse_conv_int8(x, zp, prepare_int8_conv(w), (1, 1), (1, 1, 1, 1), (1, 1), rq)
    want = QLinearConv(x, xs, np.array(zp, x.dtype), w, ws, np.zeros(m, np.int8), ys, np.array(128, np.uint8), bias,
                       pads=[1, 1, 1, 1])
    np.testing.assert_array_equal(got, np.maximum(want, 128) if relu else want)


@pytest.mark.parametrize("c,p", [(1, 1), (16, 16), (20, 37), (128, 784), (33, 50)])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_pixel_rows_transposes_every_block_and_edge(c, p, dtype):
    info = np.iinfo(dtype)
    x = np.random.default_rng(c * p).integers(info.min, info.max + 1, (c, p)).astype(dtype)
    out = np.zeros((p, c), dtype)
    pixel_rows(x, out)
    np.testing.assert_array_equal(out, x.T)


@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_conv1x1_is_the_pixel_matmul(density):
    rng = np.random.default_rng(7)
    x = activations(rng, (2, 20, 5, 4), "uint8", 0, density)
    w = rng.integers(-128, 128, (33, 20, 1, 1)).astype(np.int8)
    got = sparse_conv1x1_int8(x, 0, prepare_int8_weights(w[:, :, 0, 0].T))
    np.testing.assert_array_equal(got, ref_conv(x, w, 0, (1, 1), (0, 0, 0, 0), (1, 1)))


def test_bad_inputs_are_one_line_errors():
    prep = prepare_int8_weights(np.zeros((4, 3), np.int8))
    with pytest.raises(InvalidInputError, match="expected int8/uint8 of rank 1 with last dimension K=4"):
        sparse_gemv_int8(np.zeros(4, np.float32), 0, prep)
    with pytest.raises(InvalidInputError, match="zero point 300 is outside uint8"):
        sparse_gemv_int8(np.zeros(4, np.uint8), 300, prep)
    with pytest.raises(InvalidArgumentError, match="int8 matrix"):
        prepare_int8_weights(np.zeros((4, 3), np.float32))
    with pytest.raises(InvalidArgumentError, match="w_scale has 2 values for 3 outputs"):
        requant_params(1.0, [1.0, 2.0], 1.0, 0, 3)
    with pytest.raises(InvalidInputError, match=r"expected \(N, 4, H, W\)"):
        sparse_conv_int8(np.zeros((1, 3, 5, 5), np.uint8), 0, prepare_int8_conv(np.zeros((2, 4, 3, 3), np.int8)))
