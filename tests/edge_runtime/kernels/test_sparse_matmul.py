"""Sparse MatMul/GEMV kernels against the numpy dense reference (x @ W + b, then activation)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels import activation
from edge_runtime.kernels.sparse_matmul import (
    dense_gemv,
    dense_matmul,
    prepare_matmul_weights,
    sparse_gemv,
    sparse_matmul,
)

ACTS = [
    (activation.NONE, 0.0, 0.0),
    (activation.RELU, 0.0, 0.0),
    (activation.CLIP, -0.5, 1.5),
    (activation.LEAKY_RELU, 0.1, 0.0),
    (activation.THRESHOLD_RELU, 0.3, 0.0),
]


def sparse_input(rng: np.random.Generator, shape: tuple[int, ...], dens: float) -> np.ndarray:
    """Random normal values with exactly round(dens * size) nonzeros in random places."""
    size = int(np.prod(shape))
    x = rng.standard_normal(size).astype(np.float32)
    x[rng.permutation(size)[: size - int(round(dens * size))]] = 0.0
    return x.reshape(shape)


def reference(x, w, b, act, p0, p1):
    """float64 dense reference and a per-element error bound scaled to magnitude."""
    pre = x.astype(np.float64) @ w.astype(np.float64)
    mag = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64)
    if b is not None:
        pre = pre + b
        mag = mag + np.abs(b)
    tol = 1e-5 * mag + 1e-6
    y = activation.apply_activation(pre.astype(np.float32).copy(), act, p0, p1)
    # THRESHOLD_RELU is discontinuous at p0: rounding may flip elements that sit on it.
    ok = np.ones_like(y, dtype=bool) if act != activation.THRESHOLD_RELU else np.abs(pre - p0) > tol
    return y, tol, ok


def check(y, ref, tol, ok):
    assert y.dtype == np.float32 and y.shape == ref.shape
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err[ok] <= tol[ok] + 1e-5 * np.abs(ref[ok])), float(err[ok].max(initial=0))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 6), k=st.integers(1, 70), n=st.integers(1, 50),
    dens=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]), act=st.sampled_from(ACTS),
    with_bias=st.booleans(), tile=st.sampled_from([16, 32, None]),
    layout=st.sampled_from(["c", "fortran", "strided", "float64"]),
    seed=st.integers(0, 2**16),
)
def test_sparse_matmul_matches_dense(m, k, n, dens, act, with_bias, tile, layout, seed):
    rng = np.random.default_rng(seed)
    x = sparse_input(rng, (m, k), dens)
    if m > 1:
        x[0] = 0.0  # an all-zero row
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if with_bias else None
    ref, tol, ok = reference(x, w, b, *act)
    prepared = prepare_matmul_weights(w, tile)
    feed = {"c": x, "fortran": np.asfortranarray(x), "float64": x.astype(np.float64),
            "strided": np.repeat(x, 2, axis=1)[:, ::2]}[layout]
    check(sparse_matmul(feed, prepared, b, *act), ref, tol, ok)
    check(dense_matmul(feed, prepared, b, *act), ref, tol, ok)


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 90), n=st.integers(1, 70), dens=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    act=st.sampled_from(ACTS), with_bias=st.booleans(), strided=st.booleans(),
    tile=st.sampled_from([16, None, 4096]), seed=st.integers(0, 2**16),
)
def test_sparse_gemv_matches_dense(k, n, dens, act, with_bias, strided, tile, seed):
    # tile 4096 (>= N): the untiled layout and its grouped row sweep
    rng = np.random.default_rng(seed)
    x = sparse_input(rng, (k,), dens)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if with_bias else None
    ref, tol, ok = reference(x, w, b, *act)
    prepared = prepare_matmul_weights(w, tile)
    feed = np.repeat(x, 3)[::3] if strided else x
    check(sparse_gemv(feed, prepared, b, *act), ref, tol, ok)
    check(dense_gemv(feed, prepared, b, *act), ref, tol, ok)


@pytest.mark.parametrize("tile", [32, 1000])
@pytest.mark.parametrize("act", ACTS)
def test_parallel_variants_match_serial(act, tile):
    rng = np.random.default_rng(1)
    x = sparse_input(rng, (37, 200), 0.2)
    w = rng.standard_normal((200, 650)).astype(np.float32)
    b = rng.standard_normal(650).astype(np.float32)
    p = prepare_matmul_weights(w, tile)
    np.testing.assert_allclose(sparse_matmul(x, p, b, *act, parallel=True), sparse_matmul(x, p, b, *act),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sparse_gemv(x[3], p, b, *act, parallel=True), sparse_gemv(x[3], p, b, *act),
                               rtol=1e-5, atol=1e-4)


def test_all_zero_input_gives_activation_of_bias():
    w = np.ones((8, 5), dtype=np.float32)
    b = np.array([-1, 0, 1, 2, 3], dtype=np.float32)
    y = sparse_matmul(np.zeros((3, 8), np.float32), prepare_matmul_weights(w), b, activation.RELU)
    np.testing.assert_array_equal(y, np.tile([0, 0, 1, 2, 3], (3, 1)))


def test_prepared_roundtrips_weights():
    w = np.arange(35 * 41, dtype=np.float32).reshape(35, 41)
    p = prepare_matmul_weights(w.T.T, 16)
    assert (p.k, p.n, p.tile_n, p.wt.shape[0]) == (35, 41, 16, 3)
    np.testing.assert_array_equal(p.dense(), w)


def test_bad_arguments_raise_project_errors():
    p = prepare_matmul_weights(np.ones((4, 3), np.float32))
    with pytest.raises(InvalidInputError, match="K=4"):
        sparse_matmul(np.ones((2, 5), np.float32), p, None)
    with pytest.raises(InvalidInputError, match="K=4"):
        sparse_gemv(np.ones((2, 4), np.float32), p, None)
    with pytest.raises(InvalidInputError, match="bias"):
        sparse_gemv(np.ones(4, np.float32), p, np.ones(2, np.float32))
    with pytest.raises(InvalidArgumentError, match="activation"):
        sparse_gemv(np.ones(4, np.float32), p, None, 9)
    with pytest.raises(InvalidArgumentError, match="2-D"):
        prepare_matmul_weights(np.ones(3, np.float32))


@pytest.mark.parametrize("n, tile", [(300, 256), (150, 144), (130, None), (77, 64), (300, 300)])
@pytest.mark.parametrize("dens", [0.03, 0.4, 1.0])
def test_wide_tiles_use_register_blocks_and_remainder_vectors(n, tile, dens):
    # Tiles of >= 128 columns take the register-blocked path of sparse_common.accumulate,
    # the rest (tile % BLOCK) its one-vector path; both must match the dense reference.
    rng = np.random.default_rng(n + int(dens * 100))
    x = sparse_input(rng, (5, 97), dens)
    w = rng.standard_normal((97, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    ref, tol, ok = reference(x, w, b, activation.RELU, 0.0, 0.0)
    prepared = prepare_matmul_weights(w, tile)
    check(sparse_matmul(x, prepared, b, activation.RELU), ref, tol, ok)
    ref1, tol1, ok1 = reference(x[1:2], w, b, activation.RELU, 0.0, 0.0)
    check(sparse_gemv(x[1], prepared, b, activation.RELU)[None, :], ref1, tol1, ok1)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("kblock_bytes", [16 * 4 * 10, 16 * 4 * 96, 16 * 4 * 1000])
def test_k_blocks_of_the_token_batched_kernel(monkeypatch, kblock_bytes, parallel):
    # KBLOCK_BYTES / (4 * tile) rows of W per block: 10 (ten blocks, the last short), 96 (one
    # full block + a 1-row one) and >= K (one block) must all give the same product.
    from edge_runtime.kernels import sparse_matmul as sm

    monkeypatch.setattr(sm, "KBLOCK_BYTES", kblock_bytes)
    rng = np.random.default_rng(kblock_bytes)
    x = sparse_input(rng, (23, 97), 0.15)
    x[4] = 0.0
    w = rng.standard_normal((97, 40)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    ref, tol, ok = reference(x, w, b, activation.RELU, 0.0, 0.0)
    check(sparse_matmul(x, prepare_matmul_weights(w, 16), b, activation.RELU, parallel=parallel), ref, tol, ok)
