"""Per-node overhead of the numba engine's run loop on plain elementwise and shape ops.

A chain of ``--nodes`` tiny nodes (Add, Mul, Relu, Sigmoid, Reshape, Transpose, Unsqueeze/
Squeeze, Slice, Concat, ...) over a (1, 16, 8) tensor: the kernels do almost nothing, so the
time per node is what the executor and the op wrappers cost between kernels. Contenders:
edge_runtime's numba engine and onnxruntime (1 thread, ORT_ENABLE_ALL, which fuses little in
such a chain), interleaved (benchmarks/common.py), thread CPU time.

Run::

    python benchmarks/bench_node_overhead.py [--nodes 200] [--blocks 11] [--calls 20]
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

SHAPE = (1, 16, 8)


def chain(n_nodes: int) -> onnx.ModelProto:
    """A model of ``n_nodes`` nodes in repeating groups of ten plain ops, shape (1, 16, 8) throughout."""
    N = helper.make_node
    inits = [numpy_helper.from_array(np.full(SHAPE[1:], 0.5, np.float32), "c"),
             numpy_helper.from_array(np.array([1, 8, 16], np.int64), "shp_t"),
             numpy_helper.from_array(np.array(SHAPE, np.int64), "shp"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([8], np.int64), "eight"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes, cur, i = [], "x", 0
    while len(nodes) < n_nodes:
        k = f"_{i}"
        group = [N("Add", [cur, "c"], ["a" + k]), N("Mul", ["a" + k, "c"], ["m" + k]),
                 N("Relu", ["m" + k], ["r" + k]), N("Sigmoid", ["r" + k], ["s" + k]),
                 N("Reshape", ["s" + k, "shp_t"], ["rs" + k]), N("Transpose", ["rs" + k], ["t" + k], perm=[0, 2, 1]),
                 N("Unsqueeze", ["t" + k, "axis0"], ["u" + k]), N("Squeeze", ["u" + k, "axis0"], ["q" + k]),
                 N("Slice", ["q" + k, "zero", "eight", "axis2"], ["sl" + k]),
                 N("Concat", ["sl" + k, "sl" + k], ["cat" + k], axis=2)]
        nodes += group
        cur = "cat" + k
        nodes.append(N("Slice", [cur, "zero", "eight", "axis2"], ["y" + k]))  # back to (1, 16, 8)
        cur = "y" + k
        i += 1
    nodes = nodes[:n_nodes - 1] + [N("Identity", [nodes[n_nodes - 2].output[0]], ["out"])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=11)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    model = chain(args.nodes).SerializeToString()
    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = 1
    ours = edge_runtime.InferenceSession(model, opts, providers=["EdgeRuntimeExecutionProvider"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    theirs = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    pool = [np.random.default_rng(i).standard_normal(SHAPE).astype(np.float32) for i in range(4)]
    np.testing.assert_allclose(ours.run(None, {"x": pool[0]})[0], theirs.run(None, {"x": pool[0]})[0],
                               rtol=1e-5, atol=1e-6)
    times = common.interleave({"numba": lambda x: ours.run(None, {"x": x}),
                               "ort": lambda x: theirs.run(None, {"x": x})},
                              pool, blocks=args.blocks, calls=args.calls, clock=time.thread_time)
    steps = len(ours._plan.steps)
    for name, t in times.items():
        print(f"{name}: {common.median_ms(t) * 1e3:.1f} us per run, "
              f"{common.median_ms(t) * 1e3 / (steps if name == 'numba' else args.nodes):.2f} us per node")
    print(f"{steps} steps after planning ({args.nodes} nodes); ratio numba/ort "
          f"{common.ratio(times['numba'], times['ort']):.2f}")


if __name__ == "__main__":
    main()
