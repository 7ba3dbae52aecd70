"""The direct dense conv against im2col + sgemm, Winograd and onnxruntime, per layer shape.

Each shape is one Conv (3x3 unless named, pads k//2) with bias and SiLU, batch 1: the YOLOv8n-style
detector's 3x3 convs at 320 px, ResNet-18's and the U-Net's. Contenders, interleaved in shuffled
blocks over a pool of 4 inputs (benchmarks/common.interleave), thread CPU time at 1 thread:

* ``direct``: kernels/direct_conv.py, what ``dense_conv2d`` now runs for these shapes on AVX-512 (unless
  Winograd); measured here on every shape, also where an AVX2/NEON target's rule keeps im2col;
* ``im2col``: the same prepared conv with the direct weights removed: numba im2col + OpenBLAS sgemm;
* ``winograd``: F(2x2, 3x3), where the shape allows it (3x3, stride 1, >= 256 channels, output >= 14);
* ``onnxruntime``: Conv -> Sigmoid -> Mul in one session, ``intra_op_num_threads=1``.

Writes JSON (CPU model, code path, medians, ratios with 90% intervals) and prints a markdown table::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/bench_direct_conv.py [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks import common  # noqa: E402
from edge_runtime.kernels import direct_conv  # noqa: E402
from edge_runtime.kernels.activation import SILU  # noqa: E402
from edge_runtime.kernels.conv import prepare_conv, dense_conv2d  # noqa: E402
from edge_runtime.threads import scoped  # noqa: E402

# (name, cin, cout, input size, kernel, stride)
SHAPES = (
    ("yolo stem 3->16 s2", 3, 16, 320, 3, 2),
    ("yolo 16->32 s2", 16, 32, 160, 3, 2),
    ("yolo c2f 16->16", 16, 16, 80, 3, 1),
    ("yolo 32->64 s2", 32, 64, 80, 3, 2),
    ("yolo c2f 32->32", 32, 32, 40, 3, 1),
    ("yolo head 64->16", 64, 16, 40, 3, 1),
    ("yolo 64->64 s2", 64, 64, 40, 3, 2),
    ("yolo c2f 64->64", 64, 64, 20, 3, 1),
    ("yolo 128->128 s2", 128, 128, 20, 3, 2),
    ("yolo c2f 128->128", 128, 128, 10, 3, 1),
    ("resnet 7x7 stem", 3, 64, 224, 7, 2),
    ("resnet 64 @56", 64, 64, 56, 3, 1),
    ("resnet 128 @28", 128, 128, 28, 3, 1),
    ("resnet 256 @14", 256, 256, 14, 3, 1),
    ("resnet 512 @7", 512, 512, 7, 3, 1),
    ("unet 3->16 @128", 3, 16, 128, 3, 1),
    ("unet 32->16 @128", 32, 16, 128, 3, 1),
)


def _ort_session(w: np.ndarray, b: np.ndarray, shape: tuple[int, ...], stride: int) -> ort.InferenceSession:
    k = w.shape[2]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[stride] * 2, pads=[k // 2] * 4),
             helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench_shape(spec: tuple, blocks: int, calls: int, rng: np.random.Generator) -> dict:
    name, cin, cout, size, k, s = spec
    w = (rng.standard_normal((cout, cin, k, k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    pool = [rng.standard_normal((1, cin, size, size)).astype(np.float32) for _ in range(4)]
    prep = prepare_conv(w)
    geo = ((s, s), (k // 2,) * 4, (1, 1), SILU, 0.0, 0.0)
    im2col = dataclasses.replace(prep, direct=None, winograd=None, weight=np.ascontiguousarray(w.reshape(1, cout, -1)))
    direct = dataclasses.replace(prep, winograd=None, direct=direct_conv.direct_weights(w))
    sess = _ort_session(w, b, pool[0].shape, s)
    contenders = {"direct": lambda x: dense_conv2d(x, direct, b, *geo),
                  "im2col": lambda x: dense_conv2d(x, im2col, b, *geo),
                  "onnxruntime": lambda x: sess.run(None, {"x": x})}
    if prep.winograd is not None and s == 1 and size >= 14:
        contenders["winograd"] = lambda x: dense_conv2d(x, prep, b, *geo)
    ref = contenders["onnxruntime"](pool[0])[0]
    errs = {n: float(np.abs(f(pool[0]) - ref).max()) for n, f in contenders.items() if n != "onnxruntime"}
    times = common.interleave(contenders, pool, blocks, calls, clock=time.thread_time)
    base = times["onnxruntime"]
    return {"layer": name, "cin": cin, "cout": cout, "size": size, "kernel": k, "stride": s,
            "max_abs_err_vs_onnxruntime": errs,
            "ms": {n: common.median_ms(t) for n, t in times.items()},
            "ratio_vs_onnxruntime": {n: common.ratio(t, base) for n, t in times.items() if n != "onnxruntime"},
            "ratio_interval_90": {n: common.ratio_interval(t, base) for n, t in times.items() if n != "onnxruntime"},
            "direct_vs_im2col": common.ratio(times["direct"], times["im2col"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 blocks x 5 calls instead of 15 x 7 (noisier)")
    parser.add_argument("--out", default=str(common.RESULTS / "bench_direct_conv.json"))
    args = parser.parse_args()
    blocks, calls = (5, 5) if args.quick else (15, 7)
    rng = np.random.default_rng(0)
    rows = []
    with scoped(1):
        for spec in SHAPES:
            rows.append(bench_shape(spec, blocks, calls, rng))
            r = rows[-1]
            print(f"{r['layer']:20s} " + " ".join(f"{n} {v:.3f}" for n, v in r["ms"].items())
                  + f"  direct/ort {r['ratio_vs_onnxruntime']['direct']:.2f}", flush=True)
    table = common.markdown_table(
        ["layer", "onnxruntime ms", "direct ms", "im2col ms", "Winograd ms", "direct/ort [90%]", "direct/im2col"],
        [[r["layer"], f"{r['ms']['onnxruntime']:.3f}", f"{r['ms']['direct']:.3f}", f"{r['ms']['im2col']:.3f}",
          f"{r['ms']['winograd']:.3f}" if "winograd" in r["ms"] else "-",
          "{:.2f} [{:.2f}, {:.2f}]".format(r["ratio_vs_onnxruntime"]["direct"], *r["ratio_interval_90"]["direct"]),
          f"{r['direct_vs_im2col']:.2f}"] for r in rows])
    print(table)
    common.write_json(args.out, {"machine": common.machine_info(), "register_block": {
        "output_channels": direct_conv.OB, "max_vectors": direct_conv.NR_MAX},
        "blocks": blocks, "calls_per_block": calls, "clock": "thread_time", "layers": rows, "table": table})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
