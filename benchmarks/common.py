"""Shared benchmark utilities: interleaved timing, medians and ratios, machine info, JSON output.

The measurement method (docs references §2): contenders alternate in blocks, in a new order
every round so drift hits all of them; each call gets a different input from a small pool so no
kernel keeps reusing hot rows; one warm-up block is discarded; we report the median per-call time
and, against a baseline, the median of per-block ratios.

Example::

    from benchmarks.common import interleave, ratio, write_json
    times = interleave({"ours": f, "ort": g}, pool, blocks=11, calls=5)
    print(ratio(times["ours"], times["ort"]))     # < 1: ours is faster
    write_json("benchmarks/results/x.json", {"times": times})
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def time_block(fn: Callable[[Any], Any], pool: Sequence[Any], calls: int, start: int = 0,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``calls`` calls of ``fn``, call i on ``pool[(start + i) % len(pool)]``.

    ``clock``: ``time.perf_counter`` (wall) or ``time.thread_time`` (the calling thread's CPU
    time: right for 1-thread contenders on a shared machine, where time slices lost to other
    jobs would otherwise count).
    """
    times = []
    for i in range(calls):
        x = pool[(start + i) % len(pool)]
        t0 = clock()
        fn(x)
        times.append(clock() - t0)
    return statistics.median(times)


def interleave(contenders: Mapping[str, Callable[[Any], Any]], pool: Sequence[Any], blocks: int,
               calls: int, clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Run the contenders in a shuffled order, one block each per round, after one warm-up round.

    Args:
        contenders: name -> callable taking one pool item.
        pool: inputs; each call uses the next one.
        blocks: timed rounds; each round runs the contenders in its own order (a fixed-seed
            shuffle), so no contender always follows the same one. A rotation (A B C, B C A, ...)
            kept the neighbours: a contender after another one's block inherited its warm
            caches, or its pollution; two identical int8 sessions differed by 7% that way.
        calls: calls per block (the block's value is their median).

    Returns:
        name -> list of per-block median seconds (index r is round r, so lists pair up).
    """
    import random

    names = list(contenders)
    for name in names:  # warm-up round, discarded
        time_block(contenders[name], pool, calls, clock=clock)
    out: dict[str, list[float]] = {n: [] for n in names}
    order = random.Random(0)
    for r in range(blocks):
        for name in order.sample(names, len(names)):
            out[name].append(time_block(contenders[name], pool, calls, start=r, clock=clock))
    return out


def median_ms(times: Sequence[float]) -> float:
    """Median of per-block seconds, in milliseconds."""
    return 1e3 * statistics.median(times)


def ratio(ours: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of per-block ratios ours/baseline (blocks of the same round pair up)."""
    return statistics.median([a / b for a, b in zip(ours, baseline)])


def ratio_interval(ours: Sequence[float], baseline: Sequence[float], level: float = 0.9,
                   resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (``level``, percentile method) of the median per-block ratio.

    On a shared machine single blocks swing +-10%; the interval says whether a median
    ratio above a target is a real loss or noise (a loss: the whole interval is above).
    """
    import numpy as np

    r = np.array([a / b for a, b in zip(ours, baseline)])
    rng = np.random.default_rng(seed)
    meds = np.median(r[rng.integers(0, r.size, (resamples, r.size))], axis=1)
    lo, hi = np.percentile(meds, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def blas_info() -> list[dict[str, Any]]:
    """The thread pools numpy and friends loaded (BLAS kernel, version, threads), via threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed (pip install threadpoolctl)"}]
    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads")
    return [{k: d.get(k) for k in keys if k in d} for d in threadpool_info()]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or platform.processor() elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "CPU part"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_path() -> str:
    """Which sparse-kernel code path this CPU takes: AVX-512 compress stores or set-bit walks."""
    from edge_runtime.kernels.simd import host_has_avx512

    return "avx512-compress" if host_has_avx512() else "set-bit-walk (AVX2/NEON path)"


def machine_info() -> dict[str, Any]:
    """Host, CPU model and sparse code path, library versions, load average and OpenBLAS environment."""
    import numpy as np
    import onnxruntime as ort

    info: dict[str, Any] = {
        "machine": platform.machine(), "cpu_model": cpu_model(), "sparse_code_path": code_path(),
        "processor": platform.processor(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "numpy": np.__version__, "onnxruntime": ort.__version__,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                               "OMP_NUM_THREADS")},
        "blas": blas_info(),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = os.getloadavg()
    return info


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 2-3 significant decimals."""
    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) and abs(v) < 10 else (f"{v:.1f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
