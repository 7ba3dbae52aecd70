"""NaN and Inf inside the kernels: a NaN input is a nonzero, and no kernel drops or invents one.

Model-level parity with onnxruntime per kernel family is tests/edge_runtime/test_nonfinite.py;
this file checks the building blocks directly, on both compaction paths (AVX-512 compress and
the set-bit walk every other host takes) and with the parallel kernels.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.kernels import activation, simd
from edge_runtime.kernels import sparse_common as sc
from edge_runtime.kernels.density import density, density_at_most
from edge_runtime.kernels.pool import max_pool
from edge_runtime.kernels.softmax import softmax_rows
from edge_runtime.kernels.sparse_conv import prepare_conv_weights, sparse_conv2d
from edge_runtime.kernels.sparse_matmul import (dense_matmul, prepare_matmul_weights, sparse_gemv,
                                                sparse_matmul)

RNG = np.random.default_rng(11)
NONFINITE = [np.nan, np.inf, -np.inf]


def _sparse(shape: tuple[int, ...], dens: float = 0.1) -> np.ndarray:
    return (RNG.standard_normal(shape) * (RNG.random(shape) < dens)).astype(np.float32)


def _same_nonfinite(got: np.ndarray, want: np.ndarray) -> None:
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("value", NONFINITE)
@pytest.mark.parametrize("n", [5, 16, 37, 64])
def test_compact_keeps_nonfinite_values(n: int, value: float) -> None:
    x = _sparse((n,))
    x[n // 2] = value
    for fn in (sc.compact, sc.compact_bits):
        vals, idx = np.zeros(n, np.float32), np.zeros(n, np.int32)
        c = fn(x, vals, idx)
        nz = np.flatnonzero(x != 0)   # NaN != 0 is True
        np.testing.assert_array_equal(idx[:c], nz)
        np.testing.assert_array_equal(vals[:c], x[nz])  # assert_array_equal treats NaN == NaN


def test_compact_pixels_and_density_count_nan() -> None:
    xc = _sparse((5, 20))
    xc[2, 7] = np.nan
    xc[4, 19] = np.inf
    vals, idx, ptr = np.zeros(100, np.float32), np.zeros(100, np.int32), np.zeros(21, np.int32)
    sc.compact_pixels(xc, 10, vals, idx, ptr)
    assert ptr[-1] == np.count_nonzero(xc)
    assert np.isnan(vals[:ptr[-1]]).sum() == 1 and np.isposinf(vals[:ptr[-1]]).sum() == 1
    nan_only = np.full(64, np.nan, np.float32)
    assert density(nan_only) == 1.0 and density_at_most(nan_only, 0.5) == (False, 1.0)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("value", NONFINITE)
@pytest.mark.parametrize("act", [activation.NONE, activation.RELU, activation.CLIP, activation.LEAKY_RELU])
def test_sparse_matmul_and_gemv_propagate_like_dense(value: float, act: int, parallel: bool) -> None:
    w, b = RNG.standard_normal((96, 40)).astype(np.float32), RNG.standard_normal(40).astype(np.float32)
    prep = prepare_matmul_weights(w)
    x = _sparse((6, 96))
    x[2, 17] = value
    p0, p1 = (-0.5, 0.5) if act == activation.CLIP else (0.1, 0.0)
    want = activation.apply_activation(x.astype(np.float64) @ w + b, act, p0, p1)
    _same_nonfinite(sparse_matmul(x, prep, b, act, p0, p1, parallel=parallel), want)
    _same_nonfinite(sparse_gemv(x[2], prep, b, act, p0, p1, parallel=parallel), want[2])
    _same_nonfinite(dense_matmul(x, prep, b, act, p0, p1), want)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("value", NONFINITE)
def test_sparse_conv_propagates_like_direct_conv(value: float, parallel: bool) -> None:
    torch = pytest.importorskip("torch")
    x, w = _sparse((1, 8, 9, 9)), RNG.standard_normal((16, 8, 3, 3)).astype(np.float32)
    x[0, 3, 4, 5] = value
    want = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1)
    got = sparse_conv2d(x, prepare_conv_weights(w), None, (1, 1), (1, 1, 1, 1), parallel=parallel)
    _same_nonfinite(got, want.numpy())


def test_softmax_rows_nonfinite_rows_are_nan_like_onnxruntime() -> None:
    x = RNG.standard_normal((5, 8)).astype(np.float32)
    x[0, 3] = np.nan
    x[1, 2] = np.inf
    x[2, :] = -np.inf
    x[3, 1] = -np.inf  # a masked entry: exactly 0, the row stays finite
    y = softmax_rows(x)
    assert np.isnan(y[:3]).all()
    assert y[3, 1] == 0.0 and np.isfinite(y[3:]).all()
    np.testing.assert_allclose(y[3:].sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("want_indices", [False, True])
def test_max_pool_nan_anywhere_in_a_window_wins(want_indices: bool) -> None:
    for pos in range(4):
        x = np.ones((1, 1, 2, 2), np.float32)
        x.flat[pos] = np.nan
        y, _ = max_pool(x, (2, 2), (1, 1), (0, 0, 0, 0), (1, 1), want_indices=want_indices)
        assert np.isnan(y).all(), pos


def test_activation_reference_keeps_nan_except_threshold() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    for act in (activation.RELU, activation.CLIP, activation.LEAKY_RELU):
        assert np.isnan(activation.apply_activation(x.copy(), act, 0.0, 6.0)[0])
    assert activation.apply_activation(x.copy(), activation.THRESHOLD_RELU, 0.5)[0] == 0.0


@pytest.mark.parametrize("name, features, want", [
    ("haswell", None, False), ("skylake-avx512", None, True), ("generic", "+avx2,+fma", False),
    ("host", "+avx2,+avx512f", True),
])
def test_avx512_detection_follows_numba_target(monkeypatch, name, features, want) -> None:
    """NUMBA_CPU_NAME / NUMBA_CPU_FEATURES retarget the JIT; the kernels must not emit AVX-512 then."""
    monkeypatch.setattr(simd.numba_config, "CPU_NAME", name)
    monkeypatch.setattr(simd.numba_config, "CPU_FEATURES", features)
    assert simd.host_has_avx512() is want
