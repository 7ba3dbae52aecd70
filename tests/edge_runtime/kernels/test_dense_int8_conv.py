"""Dense int8 direct conv (small reduction) exactly against an int64 reference, and the int8 epilogues."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.kernels.dense_int8_conv import MAX_REDUCTION, dense_conv_int8, prepare_dense_int8_conv
from edge_runtime.kernels.int8_epilogue import identity_table, requantize_nchw
from edge_runtime.kernels.sparse_int8 import requant_params
from edge_runtime.ops.quant_linear import QLinearConv
from tests.edge_runtime.kernels.test_sparse_int8 import DTYPES, activations, ref_conv

dtype_zp = st.sampled_from(["uint8", "int8"]).flatmap(
    lambda d: st.tuples(st.just(d), st.sampled_from([DTYPES[d][1], 0, DTYPES[d][2], 3 if d == "uint8" else -7])))


def ref_out(acc, bias, mult, yzp, dtype, relu, table):
    """int64 sums + int32 bias, float32 scale, round half to even, saturate, then the table (if any)."""
    y = np.rint((acc + bias.reshape(1, -1, 1, 1)).astype(np.float32) * mult.reshape(1, -1, 1, 1)) + np.float32(yzp)
    lo, hi = DTYPES[dtype][1:]
    q = np.clip(y, max(lo, yzp) if relu else lo, hi).astype(DTYPES[dtype][0])
    return q if table is None else table[q.view(np.uint8)]


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 3), k=st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 5)]), m=st.integers(1, 40),
       hw=st.tuples(st.integers(1, 13), st.integers(1, 13)), strides=st.sampled_from([(1, 1), (2, 2), (1, 3)]),
       pads=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2)]), dilations=st.sampled_from([(1, 1), (2, 1)]),
       dz=dtype_zp, yz=dtype_zp, relu=st.booleans(), table=st.booleans(), seed=st.integers(0, 2**16))
def test_dense_conv_equals_the_int64_reference(c, k, m, hw, strides, pads, dilations, dz, yz, relu, table, seed):
    if c * k[0] * k[1] > MAX_REDUCTION:
        c = 1
    dtype, zp = dz
    ydtype, yzp = yz
    rng = np.random.default_rng(seed)
    x = activations(rng, (2, c, *hw), dtype, zp, 0.7)
    w = rng.integers(-128, 128, (m, c, *k)).astype(np.int8)  # -128 too: the largest products
    hp, wp = hw[0] + pads[0] + pads[2], hw[1] + pads[1] + pads[3]
    if hp < (k[0] - 1) * dilations[0] + 1 or wp < (k[1] - 1) * dilations[1] + 1:
        return  # no output pixel
    bias = rng.integers(-2000, 2000, m).astype(np.int32)
    ws = rng.uniform(0.001, 0.02, m).astype(np.float32)
    tab = rng.integers(0, 256, 256).astype(np.uint8).view(DTYPES[ydtype][0]) if table else None
    rq = requant_params(0.03, ws, 0.05, yzp, m, bias=bias, relu=relu, out_dtype=DTYPES[ydtype][0], table=tab)
    got = dense_conv_int8(x, zp, prepare_dense_int8_conv(w), strides, pads, dilations, rq)
    acc = ref_conv(x, w, zp, strides, pads, dilations)
    np.testing.assert_array_equal(got, ref_out(acc, bias, rq.multiplier[:m], yzp, ydtype, relu, tab))


def test_dense_conv_equals_qlinearconv_at_the_extremes():
    """All inputs at one end, weights at -128: the largest sum (9 * 255 * 128) is still exact."""
    for x_val, zp in ((255, 0), (0, 255)):
        x = np.full((1, 3, 6, 6), x_val, np.uint8)
        w = np.full((4, 3, 3, 3), -128, np.int8)
        rq = requant_params(np.float32(0.01), np.float32(0.002), np.float32(0.5), 128, 4, out_dtype=np.uint8)
        got = dense_conv_int8(x, zp, prepare_dense_int8_conv(w), (1, 1), (1, 1, 1, 1), (1, 1), rq)
        ref = QLinearConv(x, np.float32(0.01), np.uint8(zp), w, np.float32(0.002), np.int8(0), np.float32(0.5),
                          np.uint8(128), pads=[1, 1, 1, 1])
        np.testing.assert_array_equal(got, ref)


def test_dense_conv_refuses_a_large_reduction():
    with pytest.raises(InvalidArgumentError, match="C\\*KH\\*KW"):
        prepare_dense_int8_conv(np.zeros((4, 4, 3, 3), np.int8))


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("npix,m", [(1, 1), (17, 16), (40, 33), (256, 64)])
def test_nchw_epilogue_tiles_equal_the_row_epilogue(npix, m, dtype):
    rng = np.random.default_rng(npix * m)
    mp = max(16, -(-m // 16) * 16)
    acc = rng.integers(-40000, 40000, (npix, mp)).astype(np.int32)
    dt = DTYPES[dtype][0]
    rq = requant_params(0.02, rng.uniform(0.001, 0.01, m), 0.05, 3 if dtype == "uint8" else -7, m,
                        bias=rng.integers(-500, 500, m), out_dtype=dt)
    table = rng.integers(0, 256, 256).astype(np.uint8).view(dt)
    for tab in (None, table):
        out = np.empty((m, npix), dt)
        requantize_nchw(acc, out, rq.bias, rq.multiplier, rq.zero_point, False, rq.unsigned,
                        identity_table(dt) if tab is None else tab, tab is not None)
        ref = ref_out(acc[:, :m].T.astype(np.int64)[None, :, :, None], rq.bias[:m], rq.multiplier[:m],
                      rq.zero_point, dtype, False, tab)[0, :, :, 0]
        np.testing.assert_array_equal(out, ref)
