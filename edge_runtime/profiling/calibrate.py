"""Micro-benchmarks that turn the generated host profile into a measured one.

* peak fp32 GFLOP/s: a large float32 matrix product (BLAS sgemm), best of a few calls;
* memory bandwidth: large array copies, bytes copied per second (memcpy-like, like
  sbc-bench's figure the shipped profiles use), best of a few calls;
* sparse crossovers (gemv, gemm, conv): one prepared layer per family
  (:mod:`edge_runtime.prepared`), its sparse kernel timed against the dense path the runtime
  runs for it at a few input densities (interleaved, median); the largest tested density at
  which the sparse kernel still wins, divided by the layer's crossover scale (as the
  dispatcher multiplies it back), is the family's crossover. When the kernels are missing
  the profile's defaults stay and the result says so.
"""
from __future__ import annotations

import dataclasses
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


#: The layer each family is calibrated on, by ``quick``: (op, weight shape, input shape). The gemv
#: layer is a Gemm (its rows are a batch of one, untiled weights), the gemm layer a MatMul over
#: tokens (tiled weights), the conv layer a 3x3 conv with padding 1.
_LAYERS = {
    "gemv": {True: ("FusedGemm", (512, 512), (1, 512)), False: ("FusedGemm", (1024, 1024), (1, 1024))},
    "gemm": {True: ("FusedMatMul", (512, 512), (64, 512)), False: ("FusedMatMul", (1024, 1024), (64, 1024))},
    "conv": {True: ("FusedConv", (32, 32, 3, 3), (1, 32, 14, 14)),
             False: ("FusedConv", (64, 64, 3, 3), (1, 64, 28, 28))},
}


def _family_calls(family: str, quick: bool) -> tuple[Callable[[float], tuple[Callable, Callable]], float] | None:
    """(calls, crossover scale) for ``family``: ``calls(d)`` gives the sparse and the dense call of a
    prepared layer (:mod:`edge_runtime.prepared`) on inputs of density ``d``, the two paths the
    dispatcher chooses between; the scale is the layer's factor on the family crossover. None when
    the kernels cannot be imported."""
    try:
        from edge_runtime.graph import Node
        from edge_runtime.prepared import prepare

        op, w_shape, x_shape = _LAYERS[family][quick]
        rng = np.random.default_rng(0)
        w = rng.standard_normal(w_shape).astype(np.float32)
        attrs = {"pads": [1, 1, 1, 1]} if op == "FusedConv" else {}
        layer = prepare(Node(op, ("x", "w"), ("y",), attrs, f"calibrate_{family}"), {"w": w})
        sparse_fn, dense_fn = layer.sparse_kernel(), layer.dense
    except ImportError as exc:
        log.warning("sparse kernels not importable (%s): crossovers keep the profile defaults", exc)
        return None

    def calls(d: float) -> tuple[Callable, Callable]:
        pool = [_sparse_input(x_shape, d, rng) for _ in range(4)]
        return (lambda i: sparse_fn(pool[i % 4], d), lambda i: dense_fn(pool[i % 4], w))
    return calls, layer.crossover_scale


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
        found = _family_calls(family, quick)
        if found is None:
            notes.append(f"{family}: sparse kernels not available, kept the default {cross[family]}")
            continue
        calls, scale = found
        # the dispatcher runs a layer sparse up to crossover * its scale: the measured layer's
        # break-even, divided by its scale, is the family's crossover
        cross[family] = min(1.0, _crossover(calls, 5 if quick else 20) / scale)
        measured.append(family)
    profile = dataclasses.replace(
        base, compute=dp.Compute(round(peak, 1), estimated=False),
        memory=dp.Memory(base.memory.size_gb, round(bw, 2), estimated=False),
        runtime=dp.Runtime(base.runtime.threads, dp.SparseCrossover(**cross)))
    return Calibration(profile, peak, bw, cross, tuple(measured), tuple(notes))
