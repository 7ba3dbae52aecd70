"""Dense conv / conv-transpose / pooling kernels against torch.nn.functional."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels import activation
from edge_runtime.kernels.conv import dense_conv, dense_conv2d, prepare_conv
from edge_runtime.kernels.conv_transpose import (dense_conv_transpose, full_out_spatial,
                                                 prepare_conv_transpose)
from edge_runtime.kernels.geometry import conv_out_spatial, resolve_pads
from edge_runtime.kernels.pool import avg_pool, max_pool

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(1234)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape, dtype=np.float32)


def _t(a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a))


def _torch_pad(x: np.ndarray, pads: list[int], value: float = 0.0):
    """ONNX begins-then-ends pads -> F.pad (last axis first)."""
    nd = len(pads) // 2
    tp = []
    for i in reversed(range(nd)):
        tp += [pads[i], pads[nd + i]]
    return F.pad(_t(x), tp, value=value)


# (N, Cin, H, W, Cout, (kh, kw), stride, pads [t, l, b, r], dilation, group)
CONV2D_CASES = [
    (1, 3, 17, 19, 8, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 1),
    (2, 4, 10, 9, 6, (3, 3), (2, 2), [1, 0, 2, 1], (2, 2), 2),     # asymmetric pads, dilation, groups
    (1, 8, 12, 12, 8, (3, 3), (2, 2), [1, 1, 1, 1], (1, 1), 8),     # depthwise stride 2
    (2, 6, 11, 13, 6, (5, 5), (1, 1), [2, 2, 2, 2], (1, 1), 6),     # depthwise 5x5, batch 2
    (1, 4, 9, 9, 8, (3, 3), (1, 1), [2, 1, 0, 3], (2, 1), 4),       # depthwise multiplier 2
    (1, 8, 12, 12, 16, (1, 1), (1, 1), [0, 0, 0, 0], (1, 1), 1),    # 1x1: no im2col
    (3, 8, 13, 12, 16, (1, 1), (2, 2), [0, 0, 0, 0], (1, 1), 1),    # strided 1x1 (downsample)
    (1, 8, 12, 12, 4, (1, 1), (1, 1), [1, 0, 0, 1], (1, 1), 2),     # padded grouped 1x1
    (1, 3, 30, 30, 8, (7, 7), (2, 2), [3, 3, 3, 3], (1, 1), 1),     # ResNet stem
    (1, 5, 8, 10, 7, (2, 3), (3, 1), [0, 2, 1, 0], (1, 3), 1),      # rectangular kernel
]


@pytest.mark.parametrize("case", CONV2D_CASES)
@pytest.mark.parametrize("act,p0,p1", [(activation.NONE, 0.0, 0.0), (activation.RELU, 0.0, 0.0),
                                       (activation.CLIP, 0.0, 6.0), (activation.LEAKY_RELU, 0.1, 0.0),
                                       (activation.THRESHOLD_RELU, 0.5, 0.0)])
def test_conv2d_matches_torch(case, act, p0, p1):
    n, cin, h, w, cout, k, s, pads, d, g = case
    x, wt, b = _rand(n, cin, h, w), _rand(cout, cin // g, *k), _rand(cout)
    got = dense_conv2d(x, prepare_conv(wt, g), b, s, pads, d, act, p0, p1)
    ref = F.conv2d(_torch_pad(x, pads), _t(wt), _t(b), s, 0, d, g).numpy()
    activation.apply_activation(ref, act, p0, p1)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conv_without_bias_and_noncontiguous_input():
    x = _rand(2, 4, 10, 12)[:, :, :, ::2]
    wt = _rand(5, 4, 3, 3)
    got = dense_conv(x, prepare_conv(wt, 1), None, [1, 1], [1, 1, 1, 1], [1, 1])
    ref = F.conv2d(_t(x), _t(wt), None, 1, 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("g,cout,k,s,pads,d", [(1, 6, 3, 2, [1, 2], 1), (4, 4, 3, 1, [2, 0], 2),
                                                (2, 6, 1, 3, [0, 0], 1)])
def test_conv1d_matches_torch(g, cout, k, s, pads, d):
    x, wt, b = _rand(2, 4, 23), _rand(cout, 4 // g, k), _rand(cout)
    got = dense_conv(x, prepare_conv(wt, g), b, [s], pads, [d], activation.RELU)
    ref = F.relu(F.conv1d(_torch_pad(x, pads), _t(wt), _t(b), s, 0, d, g)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conv3d_matches_torch():
    x, wt, b = _rand(2, 4, 5, 9, 6), _rand(6, 2, 3, 2, 3), _rand(6)
    pads = [1, 0, 1, 1, 1, 0]
    got = dense_conv(x, prepare_conv(wt, 2), b, [1, 2, 1], pads, [1, 1, 2], activation.CLIP, -1.0, 1.0)
    ref = F.conv3d(_torch_pad(x, pads), _t(wt), _t(b), (1, 2, 1), 0, (1, 1, 2), 2).clamp(-1, 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CONV2D_CASES + [(0, 64, 16, 16, 64, (3, 3), (1, 1), [1, 1, 1, 1], (1, 1), 1)])
def test_conv_on_an_empty_batch_matches_torch(case):
    """N = 0 (Mask R-CNN's mask head when no box passed the score threshold) gives an empty
    (0, Cout, OH, OW) output on every path; the last case is winograd-sized."""
    _, cin, h, w, cout, k, s, pads, d, g = case
    x, wt, b = _rand(0, cin, h, w), _rand(cout, cin // g, *k), _rand(cout)
    ref = F.conv2d(_torch_pad(x, pads), _t(wt), _t(b), s, 0, d, g).numpy()
    for bias, act in ((b, activation.RELU), (None, activation.NONE), (None, activation.CLIP)):
        got = dense_conv(x, prepare_conv(wt, g), bias, s, pads, d, act, 0.0, 6.0)
        assert got.shape == ref.shape and got.dtype == np.float32
    x1, x3 = _rand(0, 4, 23), _rand(0, 4, 5, 9, 6)
    assert dense_conv(x1, prepare_conv(_rand(6, 4, 3), 1), _rand(6), [1], [1, 1], [1]).shape == (0, 6, 23)
    assert dense_conv(x3, prepare_conv(_rand(6, 2, 3, 2, 3), 2), _rand(6), [1, 2, 1], [1, 0, 1, 1, 1, 0],
                      [1, 1, 2], activation.RELU).shape == (0, 6, 5, 5, 3)


def test_conv_rejects_mismatched_input():
    prep = prepare_conv(_rand(4, 3, 3, 3), 1)
    with pytest.raises(InvalidInputError, match="expected \\(N, 3"):
        dense_conv(_rand(1, 5, 8, 8), prep)
    with pytest.raises(InvalidInputError, match="divisible by group"):
        prepare_conv(_rand(5, 3, 3, 3), 2)


@pytest.mark.parametrize("auto_pad,size,k,s,want", [
    ("SAME_UPPER", 7, 3, 2, [1, 1]), ("SAME_LOWER", 8, 3, 2, [1, 0]), ("SAME_UPPER", 8, 2, 1, [0, 1]),
    ("SAME_LOWER", 8, 2, 1, [1, 0]), ("VALID", 8, 3, 1, [0, 0]),
])
def test_resolve_pads_same_and_valid(auto_pad, size, k, s, want):
    pads = resolve_pads(auto_pad, [size], [k], [s], [1], [5, 5])
    assert pads == want
    if auto_pad.startswith("SAME"):
        assert conv_out_spatial([size], [k], [s], [1], pads) == [-(-size // s)]


def test_resolve_pads_rejects_bad_values():
    with pytest.raises(InvalidArgumentError, match="auto_pad='SAME'"):
        resolve_pads("SAME", [8], [3], [1], [1], None)
    with pytest.raises(InvalidArgumentError, match="pads=\\[1\\]"):
        resolve_pads("NOTSET", [8], [3], [1], [1], [1])
    with pytest.raises(InvalidArgumentError, match="larger than the padded input"):
        conv_out_spatial([2], [5], [1], [1], [0, 0])


# (N, Cin, H, W, Cout, kernel, stride, pads, output_padding, dilation, group)
CONVT_CASES = [
    (1, 8, 5, 6, 4, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1),   # U-Net upsampling
    (2, 6, 4, 4, 6, (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 3),   # grouped, batch 2
    (2, 4, 5, 6, 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 2),
    (1, 4, 7, 7, 4, (3, 3), (1, 1), (1, 1), (0, 0), (2, 2), 4),
    (1, 3, 4, 5, 2, (3, 2), (3, 2), (1, 0), (2, 1), (1, 2), 1),
]


@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose2d_matches_torch(case):
    n, cin, h, w, cout, k, s, p, op, d, g = case
    x, wt, b = _rand(n, cin, h, w), _rand(cin, cout // g, *k), _rand(cout)
    out = [f - 2 * pp + o for f, pp, o in zip(full_out_spatial((h, w), k, s, d), p, op)]
    got = dense_conv_transpose(x, prepare_conv_transpose(wt, g), b, s, d, p, out)
    ref = F.conv_transpose2d(_t(x), _t(wt), _t(b), s, p, op, g, d).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conv_transpose1d_and_3d_match_torch():
    x, wt = _rand(2, 4, 9), _rand(4, 3, 3)
    got = dense_conv_transpose(x, prepare_conv_transpose(wt, 1), None, [2], [1], [1], [18])
    ref = F.conv_transpose1d(_t(x), _t(wt), None, 2, 1, 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    x, wt = _rand(1, 4, 3, 4, 5), _rand(4, 2, 2, 2, 2)
    got = dense_conv_transpose(x, prepare_conv_transpose(wt, 1), None, [2, 2, 2], [1, 1, 1], [0, 0, 0],
                               [6, 8, 10])
    ref = F.conv_transpose3d(_t(x), _t(wt), None, 2).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


# (N, C, H, W, kernel, stride, pads (h, w), dilation, ceil_mode)
POOL_CASES = [
    (1, 3, 9, 9, (3, 3), (2, 2), (1, 1), 1, False),     # ResNet max pool
    (2, 4, 10, 11, (3, 3), (2, 2), (1, 1), 1, True),
    (1, 2, 8, 8, (2, 2), (2, 2), (0, 0), 1, False),
    (1, 2, 12, 12, (3, 3), (1, 1), (1, 1), 2, True),
    (1, 2, 7, 7, (3, 2), (2, 1), (1, 0), 1, True),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_values_and_indices_match_torch(case):
    n, c, h, w, k, s, p, d, ceil = case
    x = _rand(n, c, h, w)
    got, idx = max_pool(x, k, s, [*p, *p], [d, d], ceil, True)
    ref, ref_idx = F.max_pool2d(_t(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(got, ref.numpy())
    offsets = np.arange(n * c).reshape(n, c, 1, 1) * h * w   # torch indexes per plane, ONNX globally
    np.testing.assert_array_equal(idx, ref_idx.numpy() + offsets)


@pytest.mark.parametrize("case", POOL_CASES + [(1, 2, 5, 6, (2, 3), (3, 3), (1, 1), 1, True)])
def test_max_pool2d_values_only_path_matches_torch(case):
    """The separable values-only kernel (no indices) agrees with torch bit for bit."""
    n, c, h, w, k, s, p, d, ceil = case
    x = _rand(n, c, h, w)
    got, idx = max_pool(x, k, s, [*p, *p], [d, d], ceil, False)
    assert idx is None
    np.testing.assert_array_equal(got, F.max_pool2d(_t(x), k, s, p, d, ceil).numpy())


@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[7] == 1])
@pytest.mark.parametrize("include_pad", [False, True])
def test_avg_pool2d_matches_torch(case, include_pad):
    n, c, h, w, k, s, p, _, ceil = case
    x = _rand(n, c, h, w)
    got = avg_pool(x, k, s, [*p, *p], [1, 1], ceil, include_pad)
    ref = F.avg_pool2d(_t(x), k, s, p, ceil, include_pad).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_max_pool_storage_order_column_major():
    x = _rand(1, 1, 4, 5)
    _, idx = max_pool(x, [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], False, True, storage_order=1)
    _, row = max_pool(x, [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], False, True, storage_order=0)
    h_idx, w_idx = np.divmod(row, 5)
    np.testing.assert_array_equal(idx, w_idx * 4 + h_idx)


def test_pool_1d_and_3d_match_torch():
    x = _rand(2, 3, 17)
    got, _ = max_pool(x, [3], [2], [1, 1], [1], True)
    np.testing.assert_array_equal(got, F.max_pool1d(_t(x), 3, 2, 1, ceil_mode=True).numpy())
    got = avg_pool(x, [4], [3], [2, 2], [1], False, False)
    np.testing.assert_allclose(got, F.avg_pool1d(_t(x), 4, 3, 2, count_include_pad=False).numpy(), atol=1e-6)
    x = _rand(2, 3, 5, 6, 7)
    got, idx = max_pool(x, [3, 3, 3], [2, 2, 2], [1] * 6, [1, 1, 1], False, True)
    ref, ref_idx = F.max_pool3d(_t(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(got, ref.numpy())
    np.testing.assert_array_equal(idx, ref_idx.numpy() + np.arange(6).reshape(2, 3, 1, 1, 1) * 210)
    for ceil, include in [(False, True), (True, False)]:
        got = avg_pool(x, [3, 3, 3], [2, 2, 2], [1] * 6, [1, 1, 1], ceil, include)
        ref = F.avg_pool3d(_t(x), 3, 2, 1, ceil, include).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride, dilation, group", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_tiled_im2col_chunks_match_torch(monkeypatch, stride, dilation, group):
    """Output-row chunks (with a short last chunk) give the same conv as one whole im2col."""
    from edge_runtime.kernels import conv as conv_mod
    monkeypatch.setattr(conv_mod, "TILE_ABOVE_BYTES", 0)
    monkeypatch.setattr(conv_mod, "COLS_CHUNK_BYTES", 0)
    monkeypatch.setattr(conv_mod, "MIN_CHUNK_PIXELS", 40)   # 3 rows of 17 -> chunks 3,3,...,remainder
    x, w, b = _rand(2, 4, 19, 17), _rand(6, 4 // group, 3, 3), _rand(6)
    pads = [1, 2, 2, 1]
    got = dense_conv2d(x, prepare_conv(w, group), b, (stride, stride), pads, (dilation, dilation))
    ref = F.conv2d(_torch_pad(x, pads), _t(w), _t(b), stride, 0, dilation, group).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
