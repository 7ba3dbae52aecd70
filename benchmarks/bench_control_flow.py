"""Per-iteration overhead of Loop on the numba engine against onnxruntime.

A Loop whose body does almost nothing (an Add and a Mul on a (16,) tensor, the condition passed
through, one scan output) runs ``--trips`` iterations and once 1 iteration; the per-iteration
cost is the difference divided by ``trips - 1``, so the session's own per-run cost cancels.
Contenders: edge_runtime's numba engine and onnxruntime (1 thread each), interleaved
(benchmarks/common.py), thread CPU time. Also reported: one If choosing a one-node branch.

Run::

    python benchmarks/bench_control_flow.py [--trips 1000] [--blocks 7] [--calls 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import edge_runtime  # noqa: E402
from benchmarks import common  # noqa: E402

info = helper.make_tensor_value_info


def loop_model() -> onnx.ModelProto:
    """y = Loop(M, true, x) with body v -> (v + c) * c, scanning out each v; c is an outer value."""
    body = helper.make_graph(
        [helper.make_node("Add", ["v_in", "c"], ["a"]), helper.make_node("Mul", ["a", "c"], ["v_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_out"], ["scan"])],
        "body", [info("i", TensorProto.INT64, []), info("c_in", TensorProto.BOOL, []), info("v_in", TensorProto.FLOAT, [16])],
        [info("c_out", TensorProto.BOOL, []), info("v_out", TensorProto.FLOAT, [16]), info("scan", TensorProto.FLOAT, [16])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "x"], ["y", "trace"], body=body)], "loop",
        [info("x", TensorProto.FLOAT, [16]), info("M", TensorProto.INT64, [])],
        [info("y", TensorProto.FLOAT, [16]), info("trace", TensorProto.FLOAT, [None, 16])],
        [numpy_helper.from_array(np.full(16, 0.5, np.float32), "c"), numpy_helper.from_array(np.array(True), "cond")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def if_model() -> onnx.ModelProto:
    branch = [helper.make_graph([helper.make_node(op, ["x"], [f"y_{op}"])], op, [],
                                [info(f"y_{op}", TensorProto.FLOAT, [16])]) for op in ("Relu", "Neg")]
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch[0], else_branch=branch[1])],
                              "if", [info("x", TensorProto.FLOAT, [16]), info("c", TensorProto.BOOL, [])],
                              [info("y", TensorProto.FLOAT, [16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def sessions(model: onnx.ModelProto) -> tuple[edge_runtime.InferenceSession, ort.InferenceSession]:
    data = model.SerializeToString()
    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = 1
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return (edge_runtime.InferenceSession(data, opts, providers=["EdgeRuntimeExecutionProvider"]),
            ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trips", type=int, default=1000)
    ap.add_argument("--blocks", type=int, default=7)
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()
    ours, theirs = sessions(loop_model())
    pool = [np.random.default_rng(i).standard_normal(16).astype(np.float32) for i in range(4)]
    feed = {"x": pool[0], "M": np.array(args.trips, np.int64)}
    for a, b in zip(ours.run(None, feed), theirs.run(None, feed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    per_iter = {}
    for trips in (1, args.trips):
        m = np.array(trips, np.int64)
        times = common.interleave({"numba": lambda x: ours.run(None, {"x": x, "M": m}),
                                   "ort": lambda x: theirs.run(None, {"x": x, "M": m})},
                                  pool, blocks=args.blocks, calls=args.calls, clock=time.thread_time)
        per_iter[trips] = {k: common.median_ms(t) for k, t in times.items()}
    for name in ("numba", "ort"):
        one, many = per_iter[1][name], per_iter[args.trips][name]
        print(f"Loop {name}: {one * 1e3:.1f} us for 1 iteration, {many:.2f} ms for {args.trips}; "
              f"{(many - one) * 1e3 / (args.trips - 1):.1f} us per iteration")
    ours_if, theirs_if = sessions(if_model())
    c = np.array(True)
    times = common.interleave({"numba": lambda x: ours_if.run(None, {"x": x, "c": c}),
                               "ort": lambda x: theirs_if.run(None, {"x": x, "c": c})},
                              pool, blocks=args.blocks, calls=args.calls * 20, clock=time.thread_time)
    print("If (one-node branch) per run: " + ", ".join(f"{k} {common.median_ms(t) * 1e3:.1f} us"
                                                       for k, t in times.items()))


if __name__ == "__main__":
    main()
