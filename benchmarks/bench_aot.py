"""What do sparse kernels compiled ahead of time save at session creation? (issue 14's memory target)

A session that keeps a sparse island imports numba and loads its cached kernels: about 190 MB
and 0.45 s before a weight is read (docs/benchmarks.md, "island weights held once"), which is
what misses the "peak RSS <= 1.3x and creation <= 2x onnxruntime's" targets on small models.
This probe measures the alternative on one real kernel, the sparse GEMV of a Gemm island
(``edge_runtime.kernels.sparse_matmul._gemv_kernel``): compiled once by ``numba.pycc`` for
this CPU into a plain extension module, then loaded in a fresh process that never imports
numba. Each contender runs in fresh processes (alternating, ``--repeats`` each) on the same
saved inputs (a 4096 x 4096 layer, input density 0.1); each reports its import time, its first
call (numba: loading the cached machine code), the median of later calls, the resident memory
the import and first call added, and whether numba was loaded; a third process loads only
numpy and the arrays (the floor). The
outputs of the two kernels are compared, and their call speed is compared in one process,
interleaved (fresh processes differ by 5-13% from one another).

    python -m benchmarks.bench_aot --out benchmarks/results/bench_aot.json

The module is the runtime's own (``edge_runtime.engine.aot``, which ``edge-runtime warmup``
builds and the Gemm islands call); ``numba.pycc`` is deprecated (numba's documentation), supports
no ``parallel=True`` kernels, and needs one exported signature per array layout and dtype.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common


# Run in a fresh interpreter: numpy and the saved arrays, then the contender's kernel.
_CHILD = r"""
import json, statistics, sys, time
import numpy as np

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

kind, folder, calls, module = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
x, wt, bias = (np.load(folder + "/" + name + ".npy") for name in ("x", "wt", "bias"))
out = np.empty(int(np.load(folder + "/n.npy")), np.float32)
rss0 = rss_mb()
t0 = time.perf_counter()
if kind == "aot":
    sys.path.insert(0, folder)
    kernel = __import__(module).gemv
elif kind == "numba":
    from edge_runtime.kernels.sparse_matmul import _gemv_kernel as kernel
t1 = time.perf_counter()
first = later = None
if kind != "floor":
    kernel(x, wt, bias, 0, 0.0, 0.0, out)
    t2 = time.perf_counter()
    first = t2 - t1
    times = []
    for _ in range(calls):
        s = time.perf_counter()
        kernel(x, wt, bias, 0, 0.0, 0.0, out)
        times.append(time.perf_counter() - s)
    later = statistics.median(times)
    np.save(folder + "/out_" + kind + ".npy", out)
print(json.dumps({"import_s": t1 - t0, "first_call_s": first, "call_ms": None if later is None else later * 1e3,
                  "rss_before_mb": rss0, "rss_mb": rss_mb(), "numba_loaded": "numba" in sys.modules}))
"""


def build(folder: Path) -> float:
    """Compile the kernels for this CPU into ``folder`` as ``edge-runtime warmup`` does
    (:func:`edge_runtime.engine.aot.build`); returns the seconds it took."""
    from edge_runtime.engine import aot

    return aot.build(force=True, folder=folder).seconds


def save_inputs(folder: Path, k: int, n: int, density: float, seed: int = 0) -> None:
    from edge_runtime.kernels.sparse_matmul import prepare_matmul_weights

    rng = np.random.default_rng(seed)
    prepared = prepare_matmul_weights(rng.standard_normal((k, n), dtype=np.float32))
    x = rng.standard_normal(k, dtype=np.float32) * (rng.random(k) < density)
    arrays = {"x": x.astype(np.float32), "wt": prepared.wt, "n": np.array(n),
              "bias": rng.standard_normal(prepared.wt.shape[0] * prepared.wt.shape[2], dtype=np.float32)}
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)


def in_process(folder: Path, blocks: int, calls: int) -> dict[str, Any]:
    """Both kernels in this process, interleaved (``common.interleave``): the call-speed comparison.
    Fresh processes differ by 5-13% from one another, so their per-process call times are not one."""
    import importlib

    from edge_runtime.kernels.sparse_matmul import _gemv_kernel

    sys.path.insert(0, str(folder))
    try:
        aot = importlib.import_module(_module()).gemv
    finally:
        sys.path.remove(str(folder))
    x, wt, bias = (np.load(folder / f"{name}.npy") for name in ("x", "wt", "bias"))
    out = np.empty(int(np.load(folder / "n.npy")), np.float32)
    kernels = {"numba": _gemv_kernel, "aot": aot}
    times = common.interleave({k: (lambda _, f=f: f(x, wt, bias, 0, 0.0, 0.0, out)) for k, f in kernels.items()},
                              [None], blocks, calls)
    return {"blocks": blocks, "calls": calls, "call_ms": {k: common.median_ms(v) for k, v in times.items()},
            "aot_over_numba": common.ratio(times["aot"], times["numba"]),
            "aot_over_numba_90": common.ratio_interval(times["aot"], times["numba"])}


def _module() -> str:
    from edge_runtime.engine import aot

    return aot.module_name()


def child(kind: str, folder: Path, calls: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, str(folder), str(calls), _module()], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4096, help="layer inputs")
    parser.add_argument("--n", type=int, default=4096, help="layer outputs")
    parser.add_argument("--density", type=float, default=0.1, help="fraction of nonzero inputs")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per contender")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per process after the first")
    parser.add_argument("--blocks", type=int, default=31, help="interleaved rounds of calls/10 calls each, both "
                        "kernels in this process (the call-speed comparison)")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "bench_aot.json")
    a = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-aot-") as tmp:
        folder = Path(tmp)
        save_inputs(folder, a.k, a.n, a.density)
        build_s = build(folder)
        print(f"numba.pycc compiled the kernel in {build_s:.1f} s", file=sys.stderr)
        child("numba", folder, 2)  # the JIT's on-disk cache warm, as after `edge-runtime warmup`
        runs: dict[str, list[dict[str, Any]]] = {"floor": [], "numba": [], "aot": []}
        for r in range(a.repeats):
            for kind in (("floor", "numba", "aot") if r % 2 == 0 else ("aot", "numba", "floor")):
                runs[kind].append(child(kind, folder, a.calls))
        diff = float(np.max(np.abs(np.load(folder / "out_aot.npy") - np.load(folder / "out_numba.npy"))))
        together = in_process(folder, a.blocks, a.calls // 10 or 1)
    med = {kind: {key: statistics.median(r[key] for r in rows) for key in ("import_s", "rss_mb")}
           for kind, rows in runs.items()}
    for kind in ("numba", "aot"):
        for key in ("first_call_s", "call_ms"):
            med[kind][key] = statistics.median(r[key] for r in runs[kind])
        med[kind]["rss_added_mb"] = statistics.median(r["rss_mb"] - r["rss_before_mb"] for r in runs[kind])
        med[kind]["numba_loaded"] = all(r["numba_loaded"] for r in runs[kind])
    doc = {"layer": {"k": a.k, "n": a.n, "density": a.density}, "pycc_build_s": build_s, "repeats": a.repeats,
           "calls": a.calls, "max_abs_diff_aot_vs_numba": diff, "medians": med, "runs": runs,
           "in_one_process": together,
           "machine": common.machine_info()}
    common.write_json(a.out, doc)
    for kind in ("numba", "aot"):
        m = med[kind]
        print(f"{kind:5s}: import {m['import_s'] * 1e3:7.1f} ms, first call {m['first_call_s'] * 1e3:7.1f} ms, "
              f"call {m['call_ms']:.3f} ms, RSS {m['rss_mb']:.0f} MB (+{m['rss_added_mb']:.0f} MB by the kernel's "
              f"import and first call; numpy and the arrays: {med['floor']['rss_mb']:.0f} MB), "
              f"numba loaded: {m['numba_loaded']}")
    lo, hi = together["aot_over_numba_90"]
    print(f"in one process, interleaved: numba {together['call_ms']['numba']:.3f} ms, aot "
          f"{together['call_ms']['aot']:.3f} ms per call, aot/numba {together['aot_over_numba']:.3f} "
          f"(90% interval {lo:.3f}-{hi:.3f})")
    print(f"outputs: max abs difference {diff:.2e}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
