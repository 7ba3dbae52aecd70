"""Micro-benchmarks that turn the generated host profile into a measured one.

* peak fp32 GFLOP/s: a large float32 matrix product (BLAS sgemm), best of a few calls;
* memory bandwidth: large array copies, bytes copied per second (memcpy-like, like
  sbc-bench's figure the shipped profiles use), best of a few calls;
* sparse crossovers (gemv, gemm, conv): the sparse kernels of
  ``edge_runtime.kernels.sparse_matmul`` / ``sparse_conv`` timed against their dense
  twins at a few input densities (interleaved, median); the crossover is the largest
  tested density at which the sparse kernel still wins. When the kernels are missing
  the profile's defaults stay and the result says so.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge_runtime.profiling import measure

log = logging.getLogger(__name__)

DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate_profile` measured, and the resulting profile.

    Example:
        >>> cal = calibrate_profile(quick=True)  # doctest: +SKIP
        >>> cal.profile.compute.peak_fp32_gflops, cal.notes  # doctest: +SKIP
    """

    profile: Any
    peak_fp32_gflops: float
    bandwidth_gbps: float
    crossovers: dict[str, float]
    measured_crossovers: tuple[str, ...]
    notes: tuple[str, ...]


def _best(fn: Callable[[], Any], reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_gflops(n: int = 1024, reps: int = 5) -> float:
    """fp32 GFLOP/s of an n x n x n sgemm (2 n^3 FLOPs), best of ``reps``."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return 2.0 * n ** 3 / _best(lambda: np.matmul(a, b, out=out), reps) / 1e9


def bandwidth_gbps(mbytes: int = 64, reps: int = 5) -> float:
    """GB/s copying a ``mbytes`` MB array (bytes copied per second, like memcpy benchmarks)."""
    src = np.ones(mbytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    return src.nbytes / _best(lambda: np.copyto(dst, src), reps) / 1e9


def _sparse_input(shape: tuple[int, ...], density: float, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return np.where(rng.random(shape) < density, np.abs(x) + 0.1, 0.0).astype(np.float32)


def _crossover(make_calls: Callable[[float], tuple[Callable[[int], Any], Callable[[int], Any]]],
               runs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Largest tested density at which sparse beats dense (median of interleaved calls)."""
    best = DENSITIES[0]
    for d in DENSITIES:
        sparse, dense = make_calls(d)
        t = measure.interleave({"sparse": sparse, "dense": dense}, runs, warmup=1, clock=clock)
        if np.median(t["sparse"]) < np.median(t["dense"]):
            best = d
    return best


def _family_calls(family: str, quick: bool) -> Callable[[float], tuple[Callable, Callable]] | None:
    try:
        sm = importlib.import_module("edge_runtime.kernels.sparse_matmul")
        sc = importlib.import_module("edge_runtime.kernels.sparse_conv")
    except ImportError as exc:
        log.warning("sparse kernels not importable (%s): crossovers keep the profile defaults", exc)
        return None
    rng = np.random.default_rng(0)
    k = 512 if quick else 1024
    if family in ("gemv", "gemm"):
        prepared = sm.prepare_matmul_weights(rng.standard_normal((k, k)).astype(np.float32))
        shape = (k,) if family == "gemv" else (64, k)
        sparse_fn, dense_fn = ((sm.sparse_gemv, sm.dense_gemv) if family == "gemv"
                               else (sm.sparse_matmul, sm.dense_matmul))

        def calls(d: float) -> tuple[Callable, Callable]:
            pool = [_sparse_input(shape, d, rng) for _ in range(4)]
            return (lambda i: sparse_fn(pool[i % 4], prepared, None, 0, 0.0, 0.0),
                    lambda i: dense_fn(pool[i % 4], prepared, None, 0, 0.0, 0.0))
        return calls
    c, hw = (32, 14) if quick else (64, 28)
    prepared = sc.prepare_conv_weights(rng.standard_normal((c, c, 3, 3)).astype(np.float32))
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 0, 0.0, 0.0)

    def conv_calls(d: float) -> tuple[Callable, Callable]:
        pool = [_sparse_input((1, c, hw, hw), d, rng) for _ in range(4)]
        return (lambda i: sc.sparse_conv2d(pool[i % 4], prepared, None, *geo),
                lambda i: sc.dense_conv2d(pool[i % 4], prepared, None, *geo))
    return conv_calls


def calibrate_profile(base: Any = None, *, quick: bool = False) -> Calibration:
    """Measure this machine and return ``base`` (default: the generated host profile) updated.

    Args:
        base: the profile to update (name, path or ``DeviceProfile``); default ``host_profile()``.
        quick: smaller problems and fewer repetitions (seconds instead of a minute).

    Returns:
        A :class:`Calibration`; write ``.profile`` with ``device_profiles.dump_profile``.
    """
    import device_profiles as dp

    base = dp.host_profile() if base is None else dp.load_profile(base)
    peak = peak_gflops(512 if quick else 1024, 3 if quick else 7)
    bw = bandwidth_gbps(16 if quick else 64, 3 if quick else 7)
    cross = {f: base.runtime.sparse_crossover[f] for f in ("gemv", "gemm", "conv")}
    measured, notes = [], []
    for family in cross:
        calls = _family_calls(family, quick)
        if calls is None:
            notes.append(f"{family}: sparse kernels not available, kept the default {cross[family]}")
            continue
        cross[family] = _crossover(calls, 5 if quick else 20)
        measured.append(family)
    profile = dataclasses.replace(
        base, compute=dp.Compute(round(peak, 1), estimated=False),
        memory=dp.Memory(base.memory.size_gb, round(bw, 2), estimated=False),
        runtime=dp.Runtime(base.runtime.threads, dp.SparseCrossover(**cross)))
    return Calibration(profile, peak, bw, cross, tuple(measured), tuple(notes))
