"""Benchmark the zero-skipping int8 kernels against edge-runtime's fp32 sparse kernels and onnxruntime int8.

Families (1 thread; every contender computes the same layer, weights fixed, inputs from a
pool of 4 with exactly the given fraction of inactive entries, ReLU-like):
  gemv 3072x768:  int8 (sparse_gemv_int8 + requant + ReLU, uint8 x, zero point 0)
                  fp32 (sparse_gemv, untiled layout, bias + ReLU)
                  ort_int8 (QLinearMatMul single-node model, uint8 x, int8 W)
  conv 3x3 28x28 128->128, pad 1:
                  int8 (sparse_conv_int8 + requant + ReLU), fp32 (sparse_conv2d + bias + ReLU)
                  ort_int8 (QLinearConv single-node model, per-channel int8 W, int32 bias)
Contenders run in interleaved blocks (a shuffled order per round, one warm-up block dropped);
times are the calling thread's CPU time (time.thread_time), so time slices lost to other
jobs on a shared machine do not count. Reports per-call medians (us) and medians of
per-block ratios (fp32 / int8, ort_int8 / int8: > 1 means int8 sparse is faster).

Run (unset the OpenBLAS variables that slow current numpy, in this command only):
    flock /tmp/heavy.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/bench_int8.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import numba  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_sparse import machine_info, run_blocks  # noqa: E402
from benchmarks.common import write_json  # noqa: E402
from edge_runtime.kernels import sparse_conv as sc  # noqa: E402
from edge_runtime.kernels import sparse_int8 as si  # noqa: E402
from edge_runtime.kernels import sparse_int8_conv as sic  # noqa: E402
from edge_runtime.kernels import sparse_matmul as sm  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_int8.json"
SPARSITIES = {"gemv": [0.9, 0.95], "conv": [0.9]}
X_SCALE, Y_SCALE = np.float32(0.02), np.float32(0.05)


def ort_int8(node: str, x_shape: list[int], w: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None) -> object:
    """A 1-thread onnxruntime session of one QLinearMatMul / QLinearConv node (uint8 in and out)."""
    inits = {"xs": X_SCALE, "xz": np.uint8(0), "w": w, "ws": w_scale, "wz": np.zeros(w_scale.shape, np.int8),
             "ys": Y_SCALE, "yz": np.uint8(0)}
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    attrs = {}
    if bias is not None:
        inits["b"] = bias
        names.append("b")
        attrs["pads"] = [1, 1, 1, 1]
    graph = helper.make_graph([helper.make_node(node, names, ["y"], **attrs)], "bench",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                              [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def gemv_case(rng: np.random.Generator) -> tuple[tuple[int, ...], dict]:
    """The GEMV contenders; inputs are uint8 (int8 and ort) with float copies for fp32."""
    k, n = 3072, 768
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    ws = rng.uniform(0.001, 0.003, n).astype(np.float32)
    p8 = si.prepare_int8_weights(w)
    rq = si.requant_params(X_SCALE, ws, Y_SCALE, 0, n, relu=True)
    wf = w.astype(np.float32) * ws
    pf = sm.prepare_matmul_weights(wf, n)  # the untiled layout the runtime uses at batch 1
    bf = np.zeros(n, np.float32)
    sess = ort_int8("QLinearMatMul", [1, k], w, ws, None)
    return (k,), {"int8": lambda x: si.sparse_gemv_int8(x[0], 0, p8, rq),
                  "fp32": lambda x: sm.sparse_gemv(x[1], pf, bf, 1, 0.0, 0.0),
                  "ort_int8": lambda x: sess.run(None, {"x": x[0].reshape(1, -1)})[0]}


def conv_case(rng: np.random.Generator) -> tuple[tuple[int, ...], dict]:
    """The 3x3 conv contenders (NCHW, batch 1, pad 1, 128 -> 128 channels)."""
    shape = (1, 128, 28, 28)
    w = rng.integers(-127, 128, (128, 128, 3, 3)).astype(np.int8)
    ws = rng.uniform(0.001, 0.003, 128).astype(np.float32)
    bias = rng.integers(-2000, 2000, 128).astype(np.int32)
    p8 = sic.prepare_int8_conv(w)
    rq = si.requant_params(X_SCALE, ws, Y_SCALE, 0, 128, bias=bias, relu=True)
    pf = sc.prepare_conv_weights(w.astype(np.float32) * ws[:, None, None, None])
    bf = bias.astype(np.float32) * X_SCALE * ws
    sess = ort_int8("QLinearConv", list(shape), w, ws, bias)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1))
    return shape, {"int8": lambda x: sic.sparse_conv_int8(x[0], 0, p8, *geo, rq),
                   "fp32": lambda x: sc.sparse_conv2d(x[1], pf, bf, *geo, 1, 0.0, 0.0, False),
                   "ort_int8": lambda x: sess.run(None, {"x": x[0]})[0]}


def inputs(shape: tuple[int, ...], sparsity: float, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """4 (uint8, float32) input pairs with exactly ``sparsity`` zeros; float = uint8 * X_SCALE."""
    out = []
    for _ in range(4):
        q = rng.integers(1, 256, int(np.prod(shape))).astype(np.uint8)
        q[rng.permutation(q.size)[: int(round(sparsity * q.size))]] = 0
        q = q.reshape(shape)
        out.append((q, q.astype(np.float32) * X_SCALE))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 blocks x 3 calls")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    numba.set_num_threads(1)
    blocks, calls = (3, 3) if args.quick else (15, 20)
    rng = np.random.default_rng(0)
    info = machine_info(1)
    info["int8_path"] = si.CODE_PATH
    results = {"machine": info, "blocks": blocks, "calls_per_block": calls, "clock": "thread_time", "families": {}}
    print(f"cpu: {info['cpu']}; int8 path: {si.CODE_PATH}")
    print("| family | sparsity | int8 us | fp32 us | ort int8 us | fp32/int8 | ort int8/int8 |")
    print("|---|---|---|---|---|---|---|")
    for family, make in (("gemv", gemv_case), ("conv", conv_case)):
        shape, fns = make(rng)
        rows = []
        for s in SPARSITIES[family]:
            t = run_blocks(fns, inputs(shape, s, rng), blocks, calls)
            med = {n: float(np.median(v) * 1e6) for n, v in t.items()}
            row = {"sparsity": s, **{f"{n}_us": v for n, v in med.items()},
                   "fp32_over_int8": float(np.median(np.array(t["fp32"]) / np.array(t["int8"]))),
                   "ort_int8_over_int8": float(np.median(np.array(t["ort_int8"]) / np.array(t["int8"])))}
            rows.append(row)
            print(f"| {family} | {s:.0%} | {med['int8']:.1f} | {med['fp32']:.1f} | {med['ort_int8']:.1f} "
                  f"| {row['fp32_over_int8']:.2f}x | {row['ort_int8_over_int8']:.2f}x |", flush=True)
        results["families"][family] = {"shape": list(shape), "rows": rows}
    results["machine"]["loadavg_end"] = os.getloadavg()
    print(f"wrote {write_json(args.out, results)}")


if __name__ == "__main__":
    main()
