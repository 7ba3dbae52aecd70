"""Winograd F(2x2, 3x3) conv (kernels/winograd.py) and its dispatch in kernels/conv.py, against torch.

Results are compared within float32 error bounds derived from each algorithm (error_bounds.py),
not a fixed tolerance: band splits change BLAS's blocking, and the rounding differs between
AVX-512, AVX2 and NEON hosts.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.kernels import activation
from edge_runtime.kernels import conv as conv_mod
from edge_runtime.kernels import winograd as wg
from edge_runtime.kernels.conv import dense_conv, prepare_conv
from tests.edge_runtime.kernels.error_bounds import assert_within, direct_conv_bound, winograd_bound

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(7)

#: (activation code, p0, p1) for every fused activation
ACTS = [(activation.NONE, 0.0, 0.0), (activation.RELU, 0.0, 0.0), (activation.CLIP, -0.5, 0.75),
        (activation.LEAKY_RELU, 0.1, 0.0), (activation.THRESHOLD_RELU, 0.3, 0.0)]


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape, dtype=np.float32)


def _reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pads: list[int]) -> np.ndarray:
    """float64 torch conv of x padded by ONNX pads (t, l, b, r), before any activation."""
    xp = F.pad(torch.from_numpy(x).double(), (pads[1], pads[3], pads[0], pads[2]))
    bt = None if b is None else torch.from_numpy(b).double()
    return F.conv2d(xp, torch.from_numpy(w).double(), bt).numpy()


def _assert_close(got: np.ndarray, pre: np.ndarray, bound: np.ndarray, act: int = activation.NONE,
                  p0: float = 0.0, p1: float = 0.0) -> None:
    """got == act(pre) within ``bound`` (the activations are 1-Lipschitz; a ThresholdedRelu output
    whose input lies within the bound of the threshold may land on either side)."""
    assert got.shape == pre.shape and got.dtype == np.float32
    ignore = np.abs(pre - p0) <= bound if act == activation.THRESHOLD_RELU else None
    assert_within(got, activation.apply_activation(pre.copy(), act, p0, p1), bound, "winograd", ignore)


@pytest.mark.parametrize("n, cin, cout, h, w, pads", [
    (1, 3, 5, 8, 8, [0, 0, 0, 0]),        # even output
    (1, 4, 6, 9, 11, [0, 0, 0, 0]),       # odd output rows and columns
    (2, 5, 3, 10, 7, [1, 1, 1, 1]),       # batch > 1, even x odd
    (3, 8, 8, 13, 13, [1, 1, 1, 1]),      # odd with padding
    (1, 6, 4, 7, 9, [1, 0, 2, 1]),        # asymmetric pads
    (1, 2, 2, 3, 3, [0, 0, 0, 0]),        # a single output pixel
])
@pytest.mark.parametrize("act, p0, p1", ACTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_winograd_matches_torch(n, cin, cout, h, w, pads, act, p0, p1, with_bias):
    x, wt = _rand(n, cin, h, w), _rand(cout, cin, 3, 3)
    b = _rand(cout) if with_bias else None
    got = wg.winograd_conv2d(x, wg.winograd_weights(wt), b, pads, act, p0, p1)
    _assert_close(got, _reference(x, wt, b, pads), winograd_bound(x, wt, b, pads), act, p0, p1)


def test_winograd_bands_match_one_band(monkeypatch):
    """Several bands of tile rows (short last band) give the same result as one band."""
    x, wt, b = _rand(2, 16, 23, 21), _rand(12, 16, 3, 3), _rand(12)
    u = wg.winograd_weights(wt)
    whole = wg.winograd_conv2d(x, u, b, [1, 1, 1, 1], activation.RELU)
    monkeypatch.setattr(wg, "CHUNK_BYTES", 0)
    monkeypatch.setattr(wg, "MIN_CHUNK_TILES", 25)   # 3 tile rows of 11 per band: 12 = 3+3+3+3
    assert wg._band_rows(16, 12, 12, 11) == 3
    banded = wg.winograd_conv2d(x, u, b, [1, 1, 1, 1], activation.RELU)
    bound = winograd_bound(x, wt, b, [1, 1, 1, 1])
    assert_within(banded, whole, 2 * bound, "banded vs one band")  # each within bound of the exact result
    _assert_close(banded, _reference(x, wt, b, [1, 1, 1, 1]), bound, activation.RELU)


def test_winograd_weights_layout():
    """U[4a + b, o, i] = (G g G^T)[a, b]; the identity-centred filter maps to G[:, 1] G[:, 1]^T."""
    wt = np.zeros((2, 3, 3, 3), np.float32)
    wt[1, 2, 1, 1] = 1.0
    u = wg.winograd_weights(wt)
    assert u.shape == (16, 2, 3) and u.dtype == np.float32 and u.flags.c_contiguous
    expected = np.outer(wg.G[:, 1], wg.G[:, 1]).reshape(16)
    np.testing.assert_array_equal(u[:, 1, 2], expected.astype(np.float32))
    assert not u[:, 0].any() and not u[:, 1, :2].any()


def test_prepare_conv_keeps_winograd_weights_only_where_it_qualifies():
    c = conv_mod.WINOGRAD_MIN_CHANNELS
    assert prepare_conv(_rand(c, c, 3, 3)).winograd is not None
    assert prepare_conv(_rand(c, c // 2, 3, 3)).winograd is None       # too few input channels
    assert prepare_conv(_rand(2 * c, c, 3, 3), group=2).winograd is None  # grouped
    assert prepare_conv(_rand(c, c, 5, 5)).winograd is None           # not 3x3


@pytest.mark.parametrize("strides, dilations, hw, expect_wino", [
    ((1, 1), (1, 1), 16, True),
    ((2, 2), (1, 1), 30, False),
    ((1, 1), (2, 2), 18, False),
    ((1, 1), (1, 1), 9, False),    # output 9x9 < WINOGRAD_MIN_OUT
])
def test_dense_conv_dispatch(monkeypatch, strides, dilations, hw, expect_wino):
    """dense_conv takes the Winograd path exactly when the rule says so, and is right either way."""
    c = conv_mod.WINOGRAD_MIN_CHANNELS
    calls = []
    real = conv_mod.winograd_conv2d
    monkeypatch.setattr(conv_mod, "winograd_conv2d", lambda *a: calls.append(1) or real(*a))
    x, wt, b = _rand(1, c, hw, hw), _rand(c, c, 3, 3), _rand(c)
    got = dense_conv(x, prepare_conv(wt), b, strides, [1, 1, 1, 1], dilations, activation.RELU)
    xp = F.pad(torch.from_numpy(x).double(), (1, 1, 1, 1))
    pre = F.conv2d(xp, torch.from_numpy(wt).double(), torch.from_numpy(b).double(), strides, 0, dilations).numpy()
    assert bool(calls) == expect_wino
    if expect_wino:
        bound = winograd_bound(x, wt, b, [1, 1, 1, 1])
    else:  # the direct bound with the dilated kernel's magnitudes
        wd = np.zeros((c, c, 2 * dilations[0] + 1, 2 * dilations[1] + 1), np.float32)
        wd[:, :, ::dilations[0], ::dilations[1]] = wt
        bound = direct_conv_bound(x, wd, b, [1, 1, 1, 1], strides)
    _assert_close(got, pre, bound, activation.RELU)
