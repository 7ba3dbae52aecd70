"""Benchmark the zero-skipping kernels against onnxruntime and a dense numpy path.

For each family (gemv 3072x768, gemm 197x3072 @ 3072x768, conv 3x3 28x28 128->128) and
each sparsity, three contenders run in interleaved blocks (a shuffled order per round,
one warm-up block discarded), each call on a different input from a small pool:
  ort    - onnxruntime, single-node model (MatMul+Add or Conv), intra_op threads = --threads
  sparse - edge_runtime.kernels sparse_gemv / sparse_matmul / sparse_conv2d
  dense  - numpy BLAS (dense_gemv / dense_matmul / dense_conv2d: im2col + BLAS)
Times are the calling thread's CPU time (time.thread_time; every contender runs on the
calling thread at 1 thread, ORT included), so time-slicing on a loaded shared machine
does not count; --wall uses wall-clock time instead. Reports per-call medians (us) and
the median of per-block ratios; the break-even
density per family is interpolated where sparse and ort cost the same. Writes JSON to
benchmarks/results/bench_sparse.json.

Run (unset the OpenBLAS variables that slow current numpy, in this command only):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/bench_sparse.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_THREADS = "1"
for _i, _a in enumerate(sys.argv):
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)  # before numpy loads its BLAS

import numba  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_runtime.kernels import sparse_conv as sc  # noqa: E402
from edge_runtime.kernels import sparse_matmul as sm  # noqa: E402

SPARSITIES = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
FAMILIES = ("gemv", "gemm", "conv")
RESULTS = Path(__file__).resolve().parent / "results" / "bench_sparse.json"


def ort_session(nodes, inputs, inits, threads):
    """An onnxruntime session for a small single-op graph with constant weights."""
    graph = helper.make_graph(nodes, "bench", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def make_case(family, threads, rng):
    """Return (input shape, {contender: fn(x)}) for one kernel family."""
    if family in ("gemv", "gemm"):
        shape = (3072,) if family == "gemv" else (197, 3072)
        w = (rng.standard_normal((3072, 768)) * 0.02).astype(np.float32)
        b = rng.standard_normal(768).astype(np.float32)
        # GEMV: the untiled layout the runtime uses for batch-1 layers; gemm: L2-sized column tiles
        p = sm.prepare_matmul_weights(w, w.shape[1] if family == "gemv" else None)
        sess = ort_session([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], {"w": w, "b": b}, threads)
        sp_fn = sm.sparse_gemv if family == "gemv" else sm.sparse_matmul
        de_fn = sm.dense_gemv if family == "gemv" else sm.dense_matmul
        par = threads > 1
        return shape, {"ort": lambda x: sess.run(None, {"x": x})[0],
                       "sparse": lambda x: sp_fn(x, p, b, 1, 0.0, 0.0, par),
                       "dense": lambda x: de_fn(x, p, b, 1, 0.0, 0.0)}
    shape = (1, 128, 28, 28)
    w = (rng.standard_normal((128, 128, 3, 3)) * 0.03).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    p = sc.prepare_conv_weights(w)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    sess = ort_session([conv], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                       {"w": w, "b": b}, threads)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1))
    return shape, {"ort": lambda x: sess.run(None, {"x": x})[0],
                   "sparse": lambda x: sc.sparse_conv2d(x, p, b, *geo, 1, 0.0, 0.0, threads > 1),
                   "dense": lambda x: sc.dense_conv2d(x, p, b, *geo, 1, 0.0, 0.0)}


def inputs(shape, sparsity, pool, rng):
    """A pool of inputs with exactly the given fraction of zeros (ReLU-like: >= 0)."""
    out = []
    for _ in range(pool):
        x = np.abs(rng.standard_normal(shape)).astype(np.float32).reshape(-1)
        x[rng.permutation(x.size)[: int(round(sparsity * x.size))]] = 0.0
        out.append(x.reshape(shape))
    return out


def run_blocks(fns, xs, blocks, calls, clock=time.thread_time):
    """Interleaved blocks; returns {name: [per-call seconds of each block]} (warm-up dropped)."""
    names = list(fns)
    times = {n: [] for n in names}
    k = 0
    for blk in range(blocks + 1):
        order = names[blk % len(names):] + names[: blk % len(names)]
        for name in order:
            fn = fns[name]
            t0 = clock()
            for _ in range(calls):
                fn(xs[k % len(xs)])
                k += 1
            if blk:
                times[name].append((clock() - t0) / calls)
    return times


def break_even(rows, key):
    """Density where the ratio ``key`` (contender / sparse time) crosses 1, interpolated."""
    pts = sorted((1.0 - r["sparsity"], r[key]) for r in rows)  # by density ascending
    for (d0, r0), (d1, r1) in zip(pts, pts[1:]):
        if r0 >= 1.0 > r1:
            return round(d0 + (r0 - 1.0) * (d1 - d0) / (r0 - r1), 3)
    return 1.0 if pts[-1][1] >= 1.0 else 0.0


def machine_info(threads):
    """benchmarks.common.machine_info (CPU model, sparse code path, versions, load) plus the thread count."""
    from benchmarks import common

    info = common.machine_info()
    info.update(threads=threads, cpu=info["cpu_model"], loadavg_start=info.get("loadavg"))
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 blocks x 3 calls, 4 sparsities")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of thread CPU time (needed for --threads > 1)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES),
                    help="kernel families to run (default: all)")
    args = ap.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    blocks, calls = (3, 3) if args.quick else (9, 5)
    sparsities = [0.0, 0.8, 0.9, 0.95] if args.quick else SPARSITIES
    rng = np.random.default_rng(0)
    clock = time.perf_counter if (args.wall or args.threads > 1) else time.thread_time
    results = {"machine": machine_info(args.threads), "blocks": blocks, "calls_per_block": calls,
               "clock": clock.__name__, "families": {}}
    print("| family | sparsity | ort us | sparse us | dense us | sparse vs ort | sparse vs dense |")
    print("|---|---|---|---|---|---|---|")
    for family in args.families:
        shape, fns = make_case(family, args.threads, rng)
        rows = []
        for s in sparsities:
            t = run_blocks(fns, inputs(shape, s, 4, rng), blocks, calls, clock)
            row = {"sparsity": s, **{f"{n}_us": float(np.median(v) * 1e6) for n, v in t.items()},
                   "vs_ort": float(np.median(np.array(t["ort"]) / np.array(t["sparse"]))),
                   "vs_dense": float(np.median(np.array(t["dense"]) / np.array(t["sparse"])))}
            rows.append(row)
            print(f"| {family} | {s:.0%} | {row['ort_us']:.0f} | {row['sparse_us']:.0f} | {row['dense_us']:.0f} "
                  f"| {row['vs_ort']:.2f}x | {row['vs_dense']:.2f}x |", flush=True)
        results["families"][family] = {"shape": list(shape), "rows": rows,
                                       "break_even_density_vs_ort": break_even(rows, "vs_ort"),
                                       "break_even_density_vs_dense": break_even(rows, "vs_dense")}
    results["machine"]["loadavg_end"] = os.getloadavg()
    print()
    for fam, r in results["families"].items():
        print(f"break-even density {fam}: vs ort {r['break_even_density_vs_ort']}, "
              f"vs dense {r['break_even_density_vs_dense']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
