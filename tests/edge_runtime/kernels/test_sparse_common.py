"""The shared building blocks of the zero-skipping kernels (edge_runtime.kernels.sparse_common).

Both compaction paths run here whatever the host: ``compact`` picks the AVX-512 one on
AVX-512 hosts, ``compact_bits`` is the path every other host (aarch64) takes.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.kernels import sparse_common as sc
from edge_runtime.kernels.simd import transpose16, transpose16_bytes


def _reference(x):
    nz = np.flatnonzero(x)
    return x[nz], nz.astype(np.int32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 70), density=st.sampled_from([0.0, 0.05, 0.5, 1.0]), seed=st.integers(0, 99))
def test_compact_paths_match_flatnonzero(n, density, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * (rng.random(n) < density)).astype(np.float32)
    want_v, want_i = _reference(x)
    for fn in (sc.compact, sc.compact_bits):
        vals = np.full(n + 1, -7.0, np.float32)
        idx = np.full(n + 1, -7, np.int32)
        c = fn(x, vals, idx)
        assert c == want_i.size, fn
        np.testing.assert_array_equal(idx[:c], want_i)
        np.testing.assert_array_equal(vals[:c], want_v)


@pytest.mark.parametrize("n", [16, 33, 64])
def test_compact_writes_stay_within_the_input_length(n):
    """compress16 stores 16 lanes at the running count; with c <= k0 they end by len(x)."""
    x = np.ones(n, np.float32)
    x[::3] = 0.0
    vals = np.full(n + 16, -7.0, np.float32)
    idx = np.full(n + 16, -7, np.int32)
    c = sc.compact(x, vals, idx)
    assert c == np.count_nonzero(x)
    assert (vals[n:] == -7.0).all() and (idx[n:] == -7).all()


def test_compact_keeps_nan_in_the_vector_part():
    x = np.zeros(32, np.float32)
    x[[3, 17]] = np.nan
    x[20] = 2.0
    for fn in (sc.compact, sc.compact_bits):
        vals = np.zeros(33, np.float32)
        idx = np.zeros(33, np.int32)
        c = fn(x, vals, idx)
        assert list(idx[:c]) == [3, 17, 20]
        assert np.isnan(vals[0]) and np.isnan(vals[1]) and vals[2] == 2.0


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 40), hw=st.integers(1, 60), width=st.integers(1, 9),
       density=st.sampled_from([0.0, 0.1, 0.6, 1.0]), seed=st.integers(0, 99))
def test_compact_pixels_lists_each_pixels_channels_in_order(c, hw, width, density, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((c, hw)) * (rng.random((c, hw)) < density)).astype(np.float32)
    vals = np.empty(c * hw, np.float32)
    idx = np.empty(c * hw, np.int32)
    ptr = np.full(hw + 1, 99, np.int64)  # stale offsets from an earlier call must be reset
    sc.compact_pixels(x, width, vals, idx, ptr)
    assert ptr[0] == 0 and ptr[hw] == np.count_nonzero(x)
    for p in range(hw):
        want_v, want_c = _reference(x[:, p])
        np.testing.assert_array_equal(idx[ptr[p]:ptr[p + 1]], (p % width) * c + want_c)  # column folded in
        np.testing.assert_array_equal(vals[ptr[p]:ptr[p + 1]], want_v)


def test_mask_and_cttz():
    x = np.zeros(20, np.float32)
    x[[0, 5, 15, 19]] = 1.0

    @numba.njit
    def mask(x, k0):
        return sc.nonzero_mask16(x, k0)

    @numba.njit
    def lowest(m):
        return sc.cttz(m)

    assert mask(x, 0) == (1 << 0) | (1 << 5) | (1 << 15)
    assert mask(x, 4) == (1 << 1) | (1 << 11) | (1 << 15)

    assert [lowest(m) for m in (1, 8, 1 << 40, 0b1100)] == [0, 3, 40, 2]


@pytest.mark.parametrize("t", [16, 64, 128, 144])
def test_accumulate_taps_equals_sum_over_runs_of_pixels(t):
    rng = np.random.default_rng(t)
    cin, npix, width = 12, 9, 3
    w = rng.standard_normal((4 * width * cin, t)).astype(np.float32)
    x = (rng.standard_normal((cin, npix)) * (rng.random((cin, npix)) < 0.4)).astype(np.float32)
    vals = np.empty(npix * cin, np.float32)
    idx = np.empty(npix * cin, np.int32)
    ptr = np.empty(npix + 1, np.int64)
    sc.compact_pixels(x, width, vals, idx, ptr)
    # runs of pixels [lo, hi) with a weight-row offset; entry rows are idx + base
    tlo = np.array([0, 3, 4, 8, 2, -1], np.int64)  # entries past ntaps are never read
    thi = np.array([3, 4, 6, 9, 2, -1], np.int64)  # the last run is empty
    tbase = np.array([0, cin, 2 * width * cin, 3 * width * cin, 0, 0], np.int64)
    acc = rng.standard_normal(t).astype(np.float32)
    want = acc.astype(np.float64).copy()
    for lo, hi, base in zip(tlo[:5], thi[:5], tbase[:5]):
        for p in range(lo, hi):
            rows = base + (p % width) * cin + np.arange(cin)
            want += x[:, p].astype(np.float64) @ w[rows]

    @numba.njit
    def run(acc, w, vals, idx, ptr, tlo, thi, tbase, n):
        sc.accumulate_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, n)

    run(acc, w, vals, idx, ptr, tlo, thi, tbase, 5)
    np.testing.assert_allclose(acc, want, rtol=1e-5, atol=1e-5)


def test_transpose16_moves_a_block_in_registers():
    src = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    dst = np.zeros((60, 70), np.float32)

    @numba.njit
    def run(src, r0, c0, dst, d0, q0):
        transpose16(src, r0, c0, dst, d0, q0)

    run(src, 3, 5, dst, 7, 11)
    want = np.zeros_like(dst)
    want[7:23, 11:27] = src[3:19, 5:21].T
    np.testing.assert_array_equal(dst, want)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_transpose16_bytes_stores_the_transposed_integers(dtype):
    info = np.iinfo(dtype)
    src = np.random.default_rng(1).integers(info.min, info.max + 1, (20, 40)).astype(np.float32)
    dst = np.zeros((50, 30), dtype)

    @numba.njit
    def run(src, r0, c0, dst, d0, q0):
        transpose16_bytes(src, r0, c0, dst, d0, q0)

    run(src, 2, 9, dst, 5, 13)
    want = np.zeros_like(dst)
    want[5:21, 13:29] = src[2:18, 9:25].T.astype(dtype)
    np.testing.assert_array_equal(dst, want)


def test_padded_bias_and_fill_bias():
    bias = np.arange(1, 41, dtype=np.float32)
    padded = sc.padded_bias(bias, 48)
    np.testing.assert_array_equal(padded, np.r_[bias, np.zeros(8, np.float32)])
    np.testing.assert_array_equal(sc.padded_bias(np.zeros(0, np.float32), 32), np.zeros(32, np.float32))
    acc = np.full(16, -1.0, np.float32)
    sc.fill_bias(acc, padded, 32)  # the last tile: 8 bias values, then the padding
    np.testing.assert_array_equal(acc, padded[32:48])


def test_aligned_empty_and_workspace():
    for shape in ((3, 5), 7, (2, 3, 16)):
        a = sc.aligned_empty(shape, np.float32)
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
    a = sc.workspace("test_ws", 10, np.int32)
    b = sc.workspace("test_ws", 5, np.int32)
    assert b.ctypes.data == a.ctypes.data and b.shape == (5,)  # reused, not reallocated
    c = sc.workspace("test_ws", 100, np.int32)
    assert c.shape == (100,) and c.ctypes.data % 64 == 0
