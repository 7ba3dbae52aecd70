"""Print where we run (uname -m, platform.machine(), CPU flags) and time numba's first compile.

Run inside the arm64 root by run_tests.sh to prove the tests ran on aarch64 and to
measure how slow numba's JIT is under qemu (the number that sizes the CI timeout).
The function is compiled with cache=False, so every run measures a cold compile.
"""
from __future__ import annotations

import os
import platform
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402

t_numpy = time.perf_counter() - t0
import numba  # noqa: E402

t_numba = time.perf_counter() - t0 - t_numpy


@numba.njit(cache=False, fastmath=True)
def _saxpy_nonzero(x, w, out):  # a miniature of the sparse GEMV inner loop
    for k in range(x.shape[0]):
        v = x[k]
        if v != 0.0:
            for n in range(out.shape[0]):
                out[n] += v * w[k, n]
    return out


def main() -> None:
    """Print the probe's report (one 'key: value' per line)."""
    x = np.zeros(64, np.float32)
    x[::7] = 1.0
    w = np.ones((64, 32), np.float32)
    t1 = time.perf_counter()
    out = _saxpy_nonzero(x, w, np.zeros(32, np.float32))
    t_compile = time.perf_counter() - t1
    t2 = time.perf_counter()
    _saxpy_nonzero(x, w, np.zeros(32, np.float32))
    t_call = time.perf_counter() - t2
    assert float(out[0]) == float(np.count_nonzero(x)), out[0]
    print(f"uname -m: {os.uname().machine}")
    print(f"platform.machine(): {platform.machine()}")
    print(f"numba target CPU: {numba.config.CPU_NAME or 'host'} "
          f"({__import__('llvmlite.binding', fromlist=['x']).get_host_cpu_name()})")
    from edge_runtime.kernels.sparse_int8 import CODE_PATH  # which int8 multiply-add this CPU gets

    print(f"numba target features: {numba.config.CPU_FEATURES or 'host'}; int8 path: {CODE_PATH}")
    print(f"import numpy: {t_numpy:.2f} s, import numba: {t_numba:.2f} s")
    print(f"numba first compile (small @njit loop): {t_compile:.2f} s; second call {t_call * 1e6:.0f} us")


if __name__ == "__main__":
    main()
