"""Per-layer dense conv timings vs onnxruntime for ResNet-18 and MobileNetV2 shapes (batch 1, 224).

Each layer is one Conv (+ its activation, which both runtimes fuse) with constant
weights: edge_runtime runs the FusedConv prepared layer's dense kernel (weights prepared once),
onnxruntime a single-node model with the same thread count. The contenders alternate in
blocks (A B A B ...), each call gets a different input from a small pool, one warm-up
block first; we report per-layer medians, the median of per-pair ratios
(ours / onnxruntime: < 1 means we are faster) and a count-weighted conv-only total per
network. JSON goes to benchmarks/results/bench_conv.json.

Run (unset the OpenBLAS overrides in the benchmark command only, references §2)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/bench_conv.py [--quick] [--threads 1 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.common import time_block  # noqa: E402
from edge_runtime.graph import Node
from edge_runtime.prepared import prepare

RELU, CLIP, NONE = 1, 2, 0

# (name, cin, cout, input size, kernel, stride, group, activation, count in the network)
RESNET18 = [
    ("stem7x7", 3, 64, 224, 7, 2, 1, RELU, 1),
    ("l1_3x3", 64, 64, 56, 3, 1, 1, RELU, 4),
    ("l2_3x3s2", 64, 128, 56, 3, 2, 1, RELU, 1),
    ("l2_3x3", 128, 128, 28, 3, 1, 1, RELU, 3),
    ("l2_ds1x1", 64, 128, 56, 1, 2, 1, NONE, 1),
    ("l3_3x3s2", 128, 256, 28, 3, 2, 1, RELU, 1),
    ("l3_3x3", 256, 256, 14, 3, 1, 1, RELU, 3),
    ("l3_ds1x1", 128, 256, 28, 1, 2, 1, NONE, 1),
    ("l4_3x3s2", 256, 512, 14, 3, 2, 1, RELU, 1),
    ("l4_3x3", 512, 512, 7, 3, 1, 1, RELU, 3),
    ("l4_ds1x1", 256, 512, 14, 1, 2, 1, NONE, 1),
]
MOBILENETV2 = [
    ("stem3x3", 3, 32, 224, 3, 2, 1, CLIP, 1),
    ("dw32", 32, 32, 112, 3, 1, 32, CLIP, 1),
    ("pw32_16", 32, 16, 112, 1, 1, 1, NONE, 1),
    ("ex16_96", 16, 96, 112, 1, 1, 1, CLIP, 1),
    ("dw96s2", 96, 96, 112, 3, 2, 96, CLIP, 1),
    ("pw96_24", 96, 24, 56, 1, 1, 1, NONE, 1),
    ("ex24_144", 24, 144, 56, 1, 1, 1, CLIP, 2),
    ("dw144", 144, 144, 56, 3, 1, 144, CLIP, 1),
    ("pw144_24", 144, 24, 56, 1, 1, 1, NONE, 1),
    ("dw144s2", 144, 144, 56, 3, 2, 144, CLIP, 1),
    ("pw144_32", 144, 32, 28, 1, 1, 1, NONE, 1),
    ("ex32_192", 32, 192, 28, 1, 1, 1, CLIP, 3),
    ("dw192", 192, 192, 28, 3, 1, 192, CLIP, 2),
    ("pw192_32", 192, 32, 28, 1, 1, 1, NONE, 2),
    ("dw192s2", 192, 192, 28, 3, 2, 192, CLIP, 1),
    ("pw192_64", 192, 64, 14, 1, 1, 1, NONE, 1),
    ("ex64_384", 64, 384, 14, 1, 1, 1, CLIP, 4),
    ("dw384", 384, 384, 14, 3, 1, 384, CLIP, 4),
    ("pw384_64", 384, 64, 14, 1, 1, 1, NONE, 3),
    ("pw384_96", 384, 96, 14, 1, 1, 1, NONE, 1),
    ("ex96_576", 96, 576, 14, 1, 1, 1, CLIP, 3),
    ("dw576", 576, 576, 14, 3, 1, 576, CLIP, 2),
    ("pw576_96", 576, 96, 14, 1, 1, 1, NONE, 2),
    ("dw576s2", 576, 576, 14, 3, 2, 576, CLIP, 1),
    ("pw576_160", 576, 160, 7, 1, 1, 1, NONE, 1),
    ("ex160_960", 160, 960, 7, 1, 1, 1, CLIP, 3),
    ("dw960", 960, 960, 7, 3, 1, 960, CLIP, 3),
    ("pw960_160", 960, 160, 7, 1, 1, 1, NONE, 2),
    ("pw960_320", 960, 320, 7, 1, 1, 1, NONE, 1),
    ("last1x1", 320, 1280, 7, 1, 1, 1, CLIP, 1),
]


def _layer(spec, rng):
    """(our callable, ORT model bytes, input pool) for one layer spec."""
    name, cin, cout, size, k, s, g, act, _ = spec
    w = (rng.standard_normal((cout, cin // g, k, k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    attrs = {"pads": [k // 2] * 4, "strides": [s, s], "group": g}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if act else "y"], **attrs)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if act == RELU:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif act == CLIP:
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    node = Node("FusedConv", ("x", "w", "b"), ("y",), dict(attrs, activation=act, act_p0=0.0, act_p1=6.0),
                name, "ai.edge_runtime")
    ours = prepare(node, {"w": w, "b": b}).dense
    pool = [rng.standard_normal((1, cin, size, size)).astype(np.float32) for _ in range(4)]
    return ours, model.SerializeToString(), pool


def _bench_layer(spec, threads, blocks, calls, rng):
    ours, model, pool = _layer(spec, rng)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    a = ours
    b = lambda x: sess.run(None, {"x": x})  # noqa: E731
    ref = b(pool[0])[0]
    err = float(np.abs(a(pool[0]) - ref).max())
    time_block(a, pool, calls, 0), time_block(b, pool, calls, 0)  # warm-up block
    ta, tb = [], []
    for blk in range(blocks):
        first, second = (a, b) if blk % 2 == 0 else (b, a)
        t1, t2 = time_block(first, pool, calls, blk), time_block(second, pool, calls, blk)
        ta.append(t1 if first is a else t2)
        tb.append(t2 if first is a else t1)
    return {"layer": spec[0], "cin": spec[1], "cout": spec[2], "size": spec[3], "kernel": spec[4],
            "stride": spec[5], "group": spec[6], "count": spec[8], "max_abs_err": err,
            "ours_ms": 1e3 * statistics.median(ta), "ort_ms": 1e3 * statistics.median(tb),
            "ratio": statistics.median([x / y for x, y in zip(ta, tb)])}


def _blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info()]


def _run_threads(threads, nets, blocks, calls):
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=threads, user_api="blas")
    except ImportError:
        limiter = None
    rng = np.random.default_rng(0)
    out = {}
    for net, specs in nets.items():
        rows = [_bench_layer(s, threads, blocks, calls, rng) for s in specs]
        ours = sum(r["ours_ms"] * r["count"] for r in rows)
        theirs = sum(r["ort_ms"] * r["count"] for r in rows)
        out[net] = {"layers": rows, "ours_total_ms": ours, "ort_total_ms": theirs,
                    "total_ratio": ours / theirs}
        for r in rows:
            print(f"  t={threads} {net:11s} {r['layer']:10s} ours {r['ours_ms']:7.3f} ms  ort {r['ort_ms']:7.3f} ms"
                  f"  ratio {r['ratio']:5.2f}  x{r['count']}")
        print(f"t={threads} {net}: conv-only weighted total ours {ours:.2f} ms, ort {theirs:.2f} ms, "
              f"ratio {ours / theirs:.2f}")
    if limiter is not None:
        limiter.restore_original_limits()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer blocks/calls (noisier)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_conv.json"))
    args = parser.parse_args()
    blocks, calls = (5, 3) if args.quick else (11, 5)
    nets = {"resnet18": RESNET18, "mobilenetv2": MOBILENETV2}
    result = {"machine": platform.processor() or platform.machine(), "numpy": np.__version__,
              "onnxruntime": ort.__version__, "onnx": onnx.__version__, "blas": _blas_info(),
              "blocks": blocks, "calls_per_block": calls, "threads": {}}
    for t in args.threads:
        result["threads"][str(t)] = _run_threads(t, nets, blocks, calls)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
