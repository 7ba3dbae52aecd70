"""The direct dense conv (kernels/direct_conv.py) against the float64 numpy convolution of the sparse
conv tests, on every geometry it takes (no torch: these run on aarch64 under qemu too)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.kernels import activation
from edge_runtime.kernels import direct_conv as dc
from edge_runtime.kernels.conv import DIRECT_MAX_OUT_CHANNELS, DIRECT_MIN_TAPS, dense_conv, dense_conv2d, prepare_conv
from edge_runtime.kernels.geometry import conv_out_spatial
from tests.edge_runtime.kernels.test_sparse_conv import conv_reference
from tests.edge_runtime.kernels.test_sparse_matmul import check


def _expect(got, x, w, b, strides, pads, dilations, act=activation.NONE):
    """got == act(conv2d(x, w) + b) within the float32 error bound of the float64 reference
    (test_sparse_conv's: the same reference and check the sparse conv kernels are held to)."""
    check(got, *conv_reference(x, w, b, strides, pads, dilations, act, 0.0, 0.0))


@pytest.mark.parametrize("seed", range(40))
def test_random_geometries_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    if kh * kw == 1:
        kw = 3
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pads = [int(p) for p in rng.integers(0, 4, 4)]
    h = int(rng.integers(max(1, (kh - 1) * dh + 1 - pads[0] - pads[2]), 40))
    w = int(rng.integers(max(1, (kw - 1) * dw + 1 - pads[1] - pads[3]), 40))
    n, cin, cout = int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    x = rng.standard_normal((n, cin, h, w), dtype=np.float32)
    wt = rng.standard_normal((cout, cin, kh, kw), dtype=np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    ohw = tuple(conv_out_spatial((h, w), (kh, kw), (sh, sw), (dh, dw), pads))
    got = dc.direct_conv2d(x, dc.direct_weights(wt), b, (sh, sw), pads, (dh, dw), ohw)
    _expect(got, x, wt, b, (sh, sw), pads, (dh, dw))
    prep = prepare_conv(wt)  # what dense_conv2d runs: direct from DIRECT_MIN_TAPS taps on, else im2col
    takes = (cin * kh * kw >= DIRECT_MIN_TAPS and (DIRECT_MAX_OUT_CHANNELS is None or cout <= DIRECT_MAX_OUT_CHANNELS)
             and not cin == cout == 1)
    assert (prep.direct is not None) == takes and (prep.weight is None) == (prep.direct is not None)
    _expect(dense_conv2d(x, prep, b, (sh, sw), pads, (dh, dw)), x, wt, b, (sh, sw), pads, (dh, dw))


@pytest.mark.parametrize("cin,cout,size,stride", [(16, 32, 96, 2), (3, 16, 128, 2), (24, 20, 40, 1)])
def test_big_outputs_match_the_reference(cin, cout, size, stride):
    """Big outputs take the widest register block the host has."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, cin, size, size), dtype=np.float32)
    wt = rng.standard_normal((cout, cin, 3, 3), dtype=np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    ohw = tuple(conv_out_spatial((size, size), (3, 3), (stride, stride), (1, 1), (1, 1, 1, 1)))
    got = dc.direct_conv2d(x, dc.direct_weights(wt), b, (stride, stride), (1, 1, 1, 1), (1, 1), ohw, activation.SILU)
    _expect(got, x, wt, b, (stride, stride), (1, 1, 1, 1), (1, 1), activation.SILU)


def test_a_smaller_call_after_a_bigger_one_reuses_the_workspace_correctly():
    """The thread's scratch buffers are reused; stale values past the planes must not leak."""
    rng = np.random.default_rng(3)
    for size, cin in ((64, 24), (9, 5), (33, 24), (5, 1)):
        x = rng.standard_normal((1, cin, size, size), dtype=np.float32) * 1e3
        wt = rng.standard_normal((11, cin, 3, 3), dtype=np.float32)
        got = dense_conv2d(x, prepare_conv(wt), None, (2, 2), (1, 1, 1, 1), (1, 1))
        _expect(got, x, wt, None, (2, 2), (1, 1, 1, 1), (1, 1))


def test_infinite_inputs_give_what_a_direct_convolution_gives():
    """+inf times a positive weight stays +inf (no Winograd-style inf - inf), NaN propagates."""
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 0, 2, 3] = np.inf
    x[0, 1, 4, 4] = np.nan
    wt = np.abs(np.random.default_rng(0).standard_normal((3, 2, 3, 3), dtype=np.float32)) + 0.1
    got = dense_conv2d(x, prepare_conv(wt), None, (1, 1), (1, 1, 1, 1), (1, 1))
    want = conv_reference(x, wt, None, (1, 1), (1, 1, 1, 1), (1, 1), activation.NONE, 0.0, 0.0)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))


def test_1d_convs_take_the_direct_kernel():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 50), dtype=np.float32)
    wt = rng.standard_normal((10, 6, 5), dtype=np.float32)
    prep = prepare_conv(wt)
    assert prep.direct is not None and prep.direct.kernel_shape == (1, 5)
    got = dense_conv(x, prep, None, [2], [2, 1], [2], activation.RELU)
    _expect(got[:, :, None, :], x[:, :, None, :], wt[:, :, None, :], None, (1, 2), (0, 2, 0, 1), (1, 2), activation.RELU)


@pytest.mark.parametrize("positions", [1, 16, 17, 110, 420, 1155, 6480])
def test_tile_width_costs_least(positions):
    nr = dc.vectors_per_tile(positions)
    cost = lambda k: -(-positions // (16 * k)) * 16 * k * dc.TILE_COST[k - 1]  # noqa: E731
    assert 1 <= nr <= dc.NR_MAX and all(cost(nr) <= cost(k) for k in range(1, dc.NR_MAX + 1))


@pytest.mark.parametrize("size", [5, 9, 12, 20, 33])
def test_every_tile_width_matches_the_reference(size):
    """Output sizes whose best tile width is 1, 2 or 3 vectors (on AVX-512; 1 elsewhere)."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((1, 12, size, size), dtype=np.float32)
    wt = rng.standard_normal((9, 12, 3, 3), dtype=np.float32)
    got = dense_conv2d(x, prepare_conv(wt), None, (1, 1), (1, 1, 1, 1), (1, 1))
    _expect(got, x, wt, None, (1, 1), (1, 1, 1, 1), (1, 1))


@pytest.mark.parametrize("shape", [(1, 1, 17), (1, 1, 5, 5)])
def test_one_channel_convs_stay_on_the_depthwise_path(shape):
    """Cin = Cout = 1 is depthwise-shaped: 1-D ones used to reach the depthwise view of weights the
    direct packing had replaced (AttributeError on None)."""
    rng = np.random.default_rng(2)
    wt = rng.standard_normal(shape, dtype=np.float32)
    x = rng.standard_normal((1, 1, 40) if len(shape) == 3 else (1, 1, 12, 12), dtype=np.float32)
    prep = prepare_conv(wt)
    assert prep.direct is None and prep.weight is not None
    nd = len(shape) - 2
    got = dense_conv(x, prep, None, [1] * nd, [2] * (2 * nd), [1] * nd)
    if nd == 1:
        _expect(got[:, :, None, :], x[:, :, None, :], wt[:, :, None, :], None, (1, 1), (0, 2, 0, 2), (1, 1))
    else:
        _expect(got, x, wt, None, (1, 1), (2, 2, 2, 2), (1, 1))


def test_which_convs_get_the_direct_kernel():
    rng = np.random.default_rng(0)
    assert prepare_conv(rng.standard_normal((8, 4, 1, 1), dtype=np.float32)).direct is None  # one GEMM
    assert prepare_conv(rng.standard_normal((8, 2, 3, 3), dtype=np.float32), group=2).direct is None
    assert prepare_conv(rng.standard_normal((8, 4, 3, 3, 3), dtype=np.float32)).direct is None  # 3-D
    assert prepare_conv(rng.standard_normal((64, 1, 3, 3), dtype=np.float32)).direct is None  # 9 taps: im2col
    assert prepare_conv(rng.standard_normal((16, 2, 3, 3), dtype=np.float32)).direct is not None  # 18 taps
    wide = prepare_conv(rng.standard_normal((64, 64, 3, 3), dtype=np.float32)).direct
    assert (wide is None) == (DIRECT_MAX_OUT_CHANNELS is not None)  # AVX2/NEON: im2col for 64 outputs
    packed = prepare_conv(rng.standard_normal((9, 4, 3, 3), dtype=np.float32)).direct.packed
    assert packed.shape == (-(-9 // dc.OB), 36, dc.OB) and not packed[-1, :, 9 % dc.OB or dc.OB:].any()


@pytest.mark.parametrize("cin,cout,size,batch", [(32, 32, 8, 1), (20, 16, 12, 2), (64, 24, 4, 1),
                                                 (8, 12, 8, 1), (16, 16, 5, 1)])
def test_pointwise_convs_run_in_place_where_they_fit(cin, cout, size, batch):
    """1x1 convs whose H*W is whole tiles and Cout a multiple of OB take the zero-copy tiles; the
    others (Cout 12 on AVX-512, a 5x5 map) keep the sgemm; both match the reference."""
    rng = np.random.default_rng(cin + cout)
    x = rng.standard_normal((batch, cin, size, size), dtype=np.float32)
    wt = rng.standard_normal((cout, cin, 1, 1), dtype=np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    prep = prepare_conv(wt)
    got = dense_conv2d(x, prep, b, (1, 1), (0, 0, 0, 0), (1, 1), activation.SILU)
    _expect(got, x, wt, b, (1, 1), (0, 0, 0, 0), (1, 1), activation.SILU)
    fits = size * size % 16 == 0 and cout % dc.OB == 0
    assert ("pointwise" in prep.lazy) == (fits and (DIRECT_MAX_OUT_CHANNELS is None or cout <= DIRECT_MAX_OUT_CHANNELS))
    assert (dc.pointwise_conv2d(x, dc.direct_weights(wt), b) is not None) == fits


def test_pointwise_weights_are_built_once():
    prep = prepare_conv(np.ones((16, 8, 1, 1), np.float32))
    x = np.ones((1, 8, 4, 4), np.float32)
    dense_conv2d(x, prep, None, (1, 1), (0, 0, 0, 0), (1, 1))
    first = prep.lazy["pointwise"]
    dense_conv2d(x, prep, None, (1, 1), (0, 0, 0, 0), (1, 1))
    assert prep.lazy["pointwise"] is first
