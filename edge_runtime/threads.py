"""Thread settings scoped to one run, and the numba engine's measured default thread count.

Two pools run our kernels: numba's (the ``parallel=True`` sparse kernels; its count is set per
calling thread) and numpy's BLAS (OpenBLAS's sgemms behind the dense convs; one count per
process). A session used to set the BLAS count once, process-wide, at creation, so a 1-thread
session created before a 2-thread one ran its sgemms on 2 threads, and the user's own numpy
work ran with whatever the last session chose. :func:`scoped` sets both for one run and
restores BLAS after it (a switch costs about a microsecond through threadpoolctl's handle).

Parallel regions wait for their slowest worker; with another process busy on a core, a
descheduled worker costs a whole time slice. Measured on the 2-vCPU Xeon (numba engine, wall
time, medians of 15 runs, one core kept busy by a spinning process): MobileNetV3-style
3.1 -> 3.0 ms at 1 thread, 3.0 -> 7.0 ms at 2; YOLOv8n-style 320: 26.6 -> 27.0 ms at 1 thread,
22.1 -> 45.8 ms at 2. onnxruntime's own pool kept its time (1.8 -> 2.0 ms). So when threads
are left automatic, the numba engine measures 1 thread against all of them at session creation
and takes the parallel plan only when it wins by :data:`PARALLEL_MIN_SPEEDUP`, a margin that
pays for its fragility under load.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

#: Automatic threads choose N threads over 1 only when N is at least this much faster idle.
PARALLEL_MIN_SPEEDUP = 1.3

_BLAS: list[tuple[tuple[Any, Callable[[], int]], ...]] = []


def _blas() -> tuple[tuple[Any, Callable[[], int]], ...]:
    """threadpoolctl's controllers of the loaded BLAS libraries, each with a fast count getter
    (empty without threadpoolctl)."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS.append(())
        else:
            libs = ThreadpoolController().select(user_api="blas").lib_controllers
            _BLAS.append(tuple((lib, _count_getter(lib)) for lib in libs))
    return _BLAS[0]


def cpu_clock_fair(threads: int) -> bool:
    """Whether a run with ``threads`` threads does all its work on the calling thread, so that its
    thread CPU time prices it (immune to other processes' time slices): one thread, and numpy's BLAS
    held to one thread too (:func:`scoped` can, through threadpoolctl) or forced to one by its
    environment. Without threadpoolctl, OpenBLAS's sgemms run on every core whatever the session's
    count, and the calling thread's CPU time counted a numba-engine plan's BLAS layers at half their
    cost on 2 cores: the sparse MLP's first sessions on a device install kept the numba engine over
    the cut plan at "13-18% faster" while, BLAS held to one thread, it ran 23% slower."""
    if threads != 1:
        return False
    if _blas():
        return True
    env = [os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")]
    return "1" in env or (os.cpu_count() or 1) == 1


def run_clock(threads: int) -> Callable[[], float]:
    """The clock that times a plan run with ``threads`` threads: thread CPU time where
    :func:`cpu_clock_fair`, else wall time."""
    return time.thread_time if cpu_clock_fair(threads) else time.perf_counter


def _count_getter(lib: Any) -> Callable[[], int]:
    """OpenBLAS's own ``openblas_get_num_threads`` when threadpoolctl exposes it and it agrees with
    threadpoolctl (0.3 against 2 us per read just after a run: the read is on every run), else
    threadpoolctl's property."""
    try:
        if lib.internal_api == "openblas" and lib.threading_layer != "openmp":
            fn = lib._get_symbol("openblas_get_num_threads")
            if fn is not None and fn() == lib.num_threads:
                return fn
    except Exception:  # noqa: BLE001 - a private API of threadpoolctl: its property always works
        pass
    return lambda: lib.num_threads


_SET_HERE = threading.local()


def set_numba_threads(n: int) -> None:
    """numba's thread count for the calling thread (capped at numba's pool size).

    The first call per thread goes through :func:`_keeping_openmp`: starting numba's ``omp``
    threading layer could set the process's OpenMP thread count to numba's pool size, which
    changed a host process's ``torch.set_num_threads(1)`` to 2 when it created a session (and
    made the fine-tunes of benchmarks/experiments/vit_thresholds.py train differently after a
    timing run).
    """
    import numba

    requested, n = n, max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    if getattr(_SET_HERE, "n", None) is None:
        with _keeping_openmp():
            numba.set_num_threads(n)
    elif numba.get_num_threads() != n:
        numba.set_num_threads(n)
    _SET_HERE.n = requested


@contextlib.contextmanager
def _keeping_openmp() -> Iterator[None]:
    """Run the block, then give every OpenMP runtime loaded before it its thread count back."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        yield
        return
    libs = ThreadpoolController().select(user_api="openmp").lib_controllers
    before = [lib.num_threads for lib in libs]
    try:
        yield
    finally:
        for lib, b in zip(libs, before):
            if lib.num_threads != b:
                lib.set_num_threads(b)


class scoped:  # noqa: N801 - used as a function: ``with scoped(n):``
    """Run the block with ``n`` numba and BLAS threads; BLAS's count is restored after it.

    A class rather than a generator (about 1.5 us less per run) that leaves numba's count alone
    when this thread's last setting through :func:`set_numba_threads` was already ``n``: numba's
    count is per calling thread, and reading it back costs about 2 us just after a run.
    """

    __slots__ = ("_n", "_restore")

    def __init__(self, n: int) -> None:
        self._n = n
        self._restore: list[tuple[Any, int]] = []

    def __enter__(self) -> None:
        n = self._n
        # numba's count only once numba is loaded: a plan of onnxruntime segments and numpy islands
        # never loads it (a plan with numba kernels has loaded it while it was built)
        if getattr(_SET_HERE, "n", None) != n and "numba" in sys.modules:
            set_numba_threads(n)
        for lib, count in _blas():
            before = count()
            if before != n:
                lib.set_num_threads(n)
                self._restore.append((lib, before))

    def __exit__(self, *exc: object) -> None:
        for lib, before in self._restore:
            lib.set_num_threads(before)
        self._restore = []


def fastest(plans: Sequence[Callable[[], Any]], counts: Sequence[int], repeats: int = 5) -> list[float]:
    """Wall seconds per call of each ``plans[i]`` run with ``counts[i]`` threads (interleaved, fastest)."""
    for fn, n in zip(plans, counts):
        with scoped(n):
            fn()  # warm-up: first calls load kernels
    best = [float("inf")] * len(plans)
    for _ in range(repeats):
        for i, (fn, n) in enumerate(zip(plans, counts)):
            with scoped(n):
                t0 = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - t0)
    return best
