"""Timing loop: contenders interleaved in blocks, a pool of inputs, percentile summaries.

Method (references.md §2): one warm-up block per contender first; then the contenders
alternate in blocks (A B A B ...) so drift (thermal, noisy neighbours) hits all of them;
call ``i`` of every contender gets input ``i % len(pool)`` so no kernel keeps reusing hot
rows; report the median and the median of per-pair ratios (pair ``i`` = call ``i`` of
two contenders, made in the same block round).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from edge_runtime.errors import InvalidArgumentError

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class TimingStats:
    """Summary of one contender's timed calls, all in milliseconds.

    Percentiles use linear interpolation between order statistics (numpy's default).

    Example:
        >>> s = summarize([0.001, 0.002, 0.003, 0.004], batch=1)
        >>> s.p50_ms, s.p90_ms, s.items_per_s
        (2.5, 3.7, 400.0)
    """

    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    items_per_s: float   # batch / mean seconds

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return dict(self.__dict__)


def percentile(samples: ArrayLike, q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default method).

    Raises:
        InvalidArgumentError: no samples, or ``q`` outside [0, 100].
    """
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        raise InvalidArgumentError("percentile of no samples: time at least one run (runs >= 1).")
    if not 0 <= q <= 100:
        raise InvalidArgumentError(f"percentile q={q!r} must be in [0, 100], e.g. 50 for the median.")
    return float(np.percentile(arr, q, method="linear"))


def summarize(seconds: Sequence[float], batch: int = 1) -> TimingStats:
    """Summarise per-call times (seconds) into :class:`TimingStats` (milliseconds).

    Args:
        seconds: one wall time per call.
        batch: items per call, for ``items_per_s``.

    Raises:
        InvalidArgumentError: no samples.
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise InvalidArgumentError("no timed runs to summarise; use runs >= 1.")
    p50, p90, p99 = (percentile(ms, q) for q in PERCENTILES)
    mean = float(ms.mean())
    return TimingStats(int(ms.size), mean, float(ms.std()), float(ms.min()), p50, p90, p99,
                       float(ms.max()), batch * 1e3 / mean if mean > 0 else math.inf)


def pair_ratio_median(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of ``a[i] / b[i]`` over the pairs both have (calls made in the same round)."""
    n = min(len(a), len(b))
    if n == 0:
        raise InvalidArgumentError("no paired runs to compare; both contenders need runs >= 1.")
    return float(np.median(np.asarray(a[:n], np.float64) / np.asarray(b[:n], np.float64)))


def block_size(runs: int) -> int:
    """Calls per contender per block: ~10 rounds, between 1 and 10 calls each."""
    return max(1, min(10, runs // 10))


def interleave(calls: Mapping[str, Callable[[int], Any]], runs: int, warmup: int = 1,
               block: int | None = None, progress: Callable[[int], None] | None = None,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Time every contender ``runs`` times, alternating in blocks, in a new order every round.

    The order of the contenders is shuffled per round (fixed seed): in a fixed order each one
    always ran after the same neighbour and inherited its warm caches or its pollution (two
    identical int8 sessions measured 0.194 and 0.209 ms that way in ``benchmarks.common``).

    Args:
        calls: name -> ``fn(i)`` making call number ``i`` (pick the input with ``i``).
        runs: timed calls per contender.
        warmup: untimed calls per contender first (also interleaved).
        block: calls per contender per block (default :func:`block_size`).
        progress: called with the number of calls just made, e.g. a tqdm ``update``.
        clock: the timer (tests pass a fake one).

    Returns:
        name -> list of ``runs`` wall times in seconds, in call order.

    Raises:
        InvalidArgumentError: ``runs`` < 1 or ``warmup`` < 0.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise InvalidArgumentError(f"runs={runs!r} must be an integer >= 1 (timed calls per backend).")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InvalidArgumentError(f"warmup={warmup!r} must be an integer >= 0.")
    for fn in calls.values():
        for i in range(warmup):
            fn(-1 - i)
    block = block or block_size(runs)
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = random.Random(0)
    for start in range(0, runs, block):
        for name in order.sample(list(calls), len(calls)):
            fn = calls[name]
            for i in range(start, min(start + block, runs)):
                t0 = clock()
                fn(i)
                times[name].append(clock() - t0)
            if progress is not None:
                progress(min(start + block, runs) - start)
    return times


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar when tqdm is installed and ``enabled``, else None (tqdm is optional)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="run", leave=False)


