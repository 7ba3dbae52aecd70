"""Dense int8 direct conv (small reduction) exactly against an int64 reference, and the int8 epilogues."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.kernels.dense_int8_conv import MAX_REDUCTION, dense_conv_int8, prepare_dense_int8_conv
from edge_runtime.kernels.int8_epilogue import NO_LOOKUP, affine_lookup, identity_table, requantize_nchw
from edge_runtime.kernels.sparse_int8 import requant_params
from edge_runtime.ops.quant_linear import QLinearConv
from tests.edge_runtime.kernels.test_sparse_int8 import DTYPES, activations, ref_conv

dtype_zp = st.sampled_from(["uint8", "int8"]).flatmap(
    lambda d: st.tuples(st.just(d), st.sampled_from([DTYPES[d][1], 0, DTYPES[d][2], 3 if d == "uint8" else -7])))


def fatrelu_table(rng, in_dtype, out_dtype):
    """The QuantizedLookup table of DequantizeLinear -> FATReLU -> QuantizeLinear with random parameters."""
    lo, hi = DTYPES[in_dtype][1:]
    olo, ohi = DTYPES[out_dtype][1:]
    v = np.arange(256, dtype=np.uint8).view(DTYPES[in_dtype][0]).astype(np.int32)
    s1, s2 = np.float32(rng.uniform(0.005, 0.2)), np.float32(rng.uniform(0.005, 0.2))
    z1, z2 = int(rng.integers(lo, hi + 1)), int(rng.integers(olo, olo + 40))
    x = (v - z1).astype(np.float32) * s1
    x = np.where(x >= np.float32(rng.uniform(0, 2)), x, np.float32(0))
    return np.clip(np.rint(x / s2) + z2, olo, ohi).astype(DTYPES[out_dtype][0])


TABLES = ("none", "gathered", "fatrelu")


def a_table(kind, rng, in_dtype, out_dtype):
    if kind == "none":
        return None
    if kind == "gathered":  # no arithmetic form: the byte gather
        return rng.integers(0, 256, 256).astype(np.uint8).view(DTYPES[out_dtype][0])
    return fatrelu_table(rng, in_dtype, out_dtype)


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
       dz=dtype_zp, yz=dtype_zp, relu=st.booleans(), table=st.sampled_from(TABLES), big_bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_dense_conv_equals_the_int64_reference(c, k, m, hw, strides, pads, dilations, dz, yz, relu, table, big_bias,
                                               seed):
    """Every table kind (none, gathered, arithmetic) and both sums (float32-exact, or through int32: big biases)."""
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
    bias = rng.integers(-2**28 if big_bias else -2000, 2**28 if big_bias else 2000, m).astype(np.int32)
    ws = rng.uniform(0.001, 0.02, m).astype(np.float32) / (2**15 if big_bias else 1)
    tab = a_table(table, rng, ydtype, ydtype)
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
    for kind in TABLES:
        tab = a_table(kind, rng, dtype, dtype)
        rq = requant_params(0.02, rq.multiplier[:m] * np.float32(2.5), 0.05, rq.zero_point, m, bias=rq.bias[:m],
                            out_dtype=dt, table=tab)
        assert (rq.lookup is not None) == (kind == "fatrelu")
        out = np.empty((m, npix), dt)
        requantize_nchw(acc, out, rq.bias, rq.multiplier, rq.zero_point, False, rq.unsigned,
                        identity_table(dt) if tab is None else tab, tab is not None,
                        NO_LOOKUP if rq.lookup is None else rq.lookup)
        ref = ref_out(acc[:, :m].T.astype(np.int64)[None, :, :, None], rq.bias[:m], rq.multiplier[:m],
                      rq.zero_point, dtype, False, tab)[0, :, :, 0]
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("in_dtype,out_dtype", [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8")])
def test_fatrelu_tables_get_an_exact_arithmetic_form(in_dtype, out_dtype):
    """affine_lookup finds the form of (nearly) every FATReLU table, and the form equals the table (numpy check)."""
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(200):
        table = fatrelu_table(rng, in_dtype, out_dtype)
        p = affine_lookup(table, DTYPES[in_dtype][0])
        if p is None:
            continue
        found += 1
        q = np.arange(256, dtype=np.uint8).view(DTYPES[in_dtype][0]).astype(np.float32)
        r = np.clip(np.minimum(np.maximum(q * p[2] + p[3], -4e6), 4e6).astype(np.float32), -4e6, 4e6)
        r = np.clip(np.rint(r), p[4], p[5])
        np.testing.assert_array_equal(np.where(q >= p[0], r, p[1]), table.astype(np.float32))
    assert found >= 196


def test_tables_without_the_form_are_gathered():
    rng = np.random.default_rng(3)
    assert affine_lookup(rng.integers(0, 256, 256).astype(np.uint8), np.uint8) is None
    silu = np.clip(np.rint((np.arange(256) - 128) * 0.05 / (1 + np.exp(-(np.arange(256) - 128) * 0.05)) / 0.03) + 20,
                   0, 255).astype(np.uint8)
    assert affine_lookup(silu, np.uint8) is None
    assert affine_lookup(np.full(256, 9, np.uint8), np.uint8)[1] == 9  # a constant: everything "below"
