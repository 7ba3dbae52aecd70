"""Thread settings scoped to a run, and the numba engine's measured default thread count."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime import threads
from edge_runtime.engine import plancache

NUMBA = ["EdgeRuntimeExecutionProvider"]


def _mlp() -> bytes:
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, n)
         for n, s in (("w1", (64, 256)), ("w2", (256, 8)))]
    n = helper.make_node
    g = helper.make_graph([n("MatMul", ["x", "w1"], ["h"]), n("Relu", ["h"], ["r"]), n("MatMul", ["r", "w2"], ["y"])],
                          "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], w)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_scoped_sets_both_pools_and_restores_blas() -> None:
    import numba

    libs = [lib for lib, _ in threads._blas()]
    if not libs:
        pytest.skip("threadpoolctl is not installed")
    for lib in libs:
        lib.set_num_threads(2)
    with threads.scoped(1):
        assert [lib.num_threads for lib in libs] == [1] * len(libs) and numba.get_num_threads() == 1
        assert [count() for _, count in threads._blas()] == [1] * len(libs)  # the fast getter agrees
    assert [lib.num_threads for lib in libs] == [2] * len(libs)
    with threads.scoped(2):  # numba's count follows the session's on the same thread
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    with threads.scoped(1):
        assert numba.get_num_threads() == 1


def _auto_session(monkeypatch: pytest.MonkeyPatch, cpus: int, times: tuple[float, float]):
    from edge_runtime import options

    monkeypatch.setattr(options, "available_cpus", lambda: cpus)
    calls = []

    def fastest(plans, counts, repeats=5):
        calls.append(tuple(counts))
        for p in plans:
            p()
        return list(times)

    monkeypatch.setattr(threads, "fastest", fastest)
    return edge_runtime.InferenceSession(_mlp(), providers=NUMBA), calls


@pytest.mark.parametrize("times, want", [((1e-3, 1.1e-3), 1), ((1e-3, 2.0e-3), 2)])
def test_automatic_threads_take_all_cpus_only_where_they_clearly_win(monkeypatch: pytest.MonkeyPatch,
                                                                     times: tuple[float, float], want: int) -> None:
    sess, calls = _auto_session(monkeypatch, 2, times)
    assert calls and all(c == (2, 1) for c in calls)
    assert sess.threads == want and sess.thread_choice.startswith("measured")
    x = np.ones((1, 64), np.float32)
    ref = edge_runtime.InferenceSession(_mlp(), edge_runtime.SessionOptions(), providers=NUMBA)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0], rtol=1e-6)


def test_set_threads_are_not_measured_and_the_choice_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = 2
    monkeypatch.setattr(threads, "fastest", lambda *a, **k: pytest.fail("measured a set thread count"))
    sess = edge_runtime.InferenceSession(_mlp(), opts, providers=NUMBA)
    assert sess.threads == 2 and sess.thread_choice == "set"

    monkeypatch.setenv(plancache.ENV, str(tmp_path))
    first, _ = _auto_session(monkeypatch, 2, (1e-3, 3e-3))
    assert first.threads == 2
    monkeypatch.setattr(threads, "fastest", lambda *a, **k: pytest.fail("measured again"))
    assert edge_runtime.InferenceSession(_mlp(), providers=NUMBA).threads == 2


def test_a_warmup_input_the_model_refuses_gives_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Conformance models take e.g. Resize scales as inputs, which a synthetic input makes invalid."""
    from edge_runtime import options
    from edge_runtime.errors import InvalidInputError

    monkeypatch.setattr(options, "available_cpus", lambda: 2)

    def refuse(*args, **kwargs):
        raise InvalidInputError("Resize: scales [-0.5] must all be > 0.")

    monkeypatch.setattr(threads, "fastest", refuse)
    sess = edge_runtime.InferenceSession(_mlp(), providers=NUMBA)
    assert sess.threads == 1 and "could not run" in sess.thread_choice


def test_sessions_leave_the_host_processs_openmp_threads_alone() -> None:
    """A host process that set torch (OpenMP) to 1 thread keeps 1 thread after creating and running
    sessions: starting numba's omp threading layer used to set the process's OpenMP count to numba's
    pool size. A fresh process, so numba's threading layer starts inside the test."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = ("import torch; torch.set_num_threads(1); assert torch.get_num_threads() == 1\n"  # torch's pool is up
            "from edge_runtime import threads\n"
            "threads.set_numba_threads(2)\n"
            "with threads.scoped(2):\n    pass\n"
            "from tests.edge_runtime.test_session import _mlp_model\n"
            "import numpy as np, edge_runtime\n"
            "s = edge_runtime.InferenceSession(_mlp_model(), providers=['EdgeRuntimeExecutionProvider'])\n"
            "s.run(None, {'x': np.ones((2, 4), np.float32)})\n"
            "print(torch.get_num_threads())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=str(Path(__file__).resolve().parents[2]))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "1"


def test_one_thread_plans_are_timed_in_cpu_time_only_where_blas_is_held_to_one_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "_BLAS", [()])  # no threadpoolctl: OpenBLAS runs on every core
    assert threads.run_clock(1) is time.perf_counter and threads.run_clock(2) is time.perf_counter
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # forced to one thread by its environment
    assert threads.run_clock(1) is time.thread_time
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setattr(threads, "_BLAS", [(("a BLAS library", lambda: 4),)])  # threadpoolctl sets it per run
    assert threads.run_clock(1) is time.thread_time and threads.run_clock(2) is time.perf_counter
