"""The int8 multiply-add building blocks against an int64 reference, on every path the host has.

The widening path runs everywhere; AVX-512 VNNI (``dot_*``) and aarch64 dotprod (``udot_*``)
only where :data:`HAS_VNNI` / :data:`HAS_DOTPROD` (the arm64 tests under qemu's Cortex-A76).
Extremes (inputs 255, weights -128/127) and list lengths that leave 1-3 entries outside the
quads are included on purpose.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from edge_runtime.kernels import simd_int8 as si

PATHS = [("mac", si.mac_rows, si.mac_taps, True), ("vnni", si.dot_rows, si.dot_taps, si.HAS_VNNI),
         ("udot", si.udot_rows, si.udot_taps, si.HAS_DOTPROD)]


def _rows_caller(fn, nvec):
    @numba.njit
    def call(acc, w, vals, idx, i0, i1, base, n0):  # pragma: no cover - compiled
        fn(acc, w, vals, idx, i0, i1, base, n0, nvec)
    return call


def _taps_caller(fn, nvec):
    @numba.njit
    def call(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0):  # pragma: no cover - compiled
        fn(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, nvec)
    return call


def _case(seed, k, cols, nnz):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (k, cols)).astype(np.int8)
    w[0, :] = -128
    w[1, :] = 127
    idx = rng.choice(k - 2, nnz, replace=False).astype(np.int32)
    vals = rng.integers(1, 256, nnz).astype(np.int32)
    vals[: min(3, nnz)] = 255
    return w, vals, idx


@pytest.mark.parametrize("name,rows,taps,available", PATHS, ids=[p[0] for p in PATHS])
@pytest.mark.parametrize("nvec", [1, 4])
@pytest.mark.parametrize("nnz", [1, 4, 7, 30])
def test_rows_match_int64_reference(name, rows, taps, available, nvec, nnz):
    if not available:
        pytest.skip(f"{name}: not on this host")
    cols = 16 * nvec + 16
    w, vals, idx = _case(nnz * 10 + nvec, 40, cols, nnz)
    acc = np.arange(cols, dtype=np.int32) - 7
    ref = acc.astype(np.int64)
    i0, i1, base, n0 = 0, nnz, 2, 16
    ref[n0:n0 + 16 * nvec] += vals[i0:i1].astype(np.int64) @ w[idx[i0:i1] + base, n0:n0 + 16 * nvec].astype(np.int64)
    _rows_caller(rows, nvec)(acc, w, vals, idx, i0, i1, base, n0)
    np.testing.assert_array_equal(acc, ref)


@pytest.mark.parametrize("name,rows,taps,available", PATHS, ids=[p[0] for p in PATHS])
@pytest.mark.parametrize("nvec", [2, 4])
def test_taps_match_int64_reference(name, rows, taps, available, nvec):
    if not available:
        pytest.skip(f"{name}: not on this host")
    cols = 16 * nvec
    w, vals, idx = _case(nvec, 60, cols, 23)
    ptr = np.array([0, 5, 6, 13, 23], np.int64)  # runs of 5, 1, 7, 10 entries
    tlo, thi, tbase = np.array([0, 1, 2], np.int64), np.array([1, 3, 4], np.int64), np.array([0, 1, 2], np.int64)
    acc = np.full(cols, 3, np.int32)
    ref = acc.astype(np.int64)
    for t in range(3):
        sl = slice(ptr[tlo[t]], ptr[thi[t]])
        ref += vals[sl].astype(np.int64) @ w[idx[sl] + tbase[t]].astype(np.int64)
    _taps_caller(taps, nvec)(acc, w, vals, idx, ptr, tlo, thi, tbase, 3, 0)
    np.testing.assert_array_equal(acc, ref)


@pytest.mark.parametrize("name, features, want", [
    ("skylake-avx512", None, False),  # a named CPU without a feature list: no vpdpbusd in a portable cache
    ("generic", "+avx2,+fma", False), ("host", "+avx512f,+avx512bw,+avx512vnni", True),
    ("host", "+avx512f,+avx512vnni", False),
])
def test_vnni_detection_follows_numba_target(monkeypatch, name, features, want) -> None:
    """NUMBA_CPU_NAME / NUMBA_CPU_FEATURES retarget the JIT; the int8 kernels must not emit VNNI then."""
    from edge_runtime.kernels import simd

    monkeypatch.setattr(simd.numba_config, "CPU_NAME", name)
    monkeypatch.setattr(simd.numba_config, "CPU_FEATURES", features)
    assert si.host_has_vnni() is want
