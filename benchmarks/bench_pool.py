"""Pooling ops of the numba engine against onnxruntime on the shapes of ResNet-18, YOLO and U-Net.

Each case is a one-node model (batch 1, 1 thread) run by both: edge_runtime's numba engine
(``EdgeRuntimeExecutionProvider``) and onnxruntime (ORT_ENABLE_ALL), interleaved
(benchmarks/common.py), thread CPU time. Prints the medians and the ratio (< 1: ours faster).

Run::

    python benchmarks/bench_pool.py [--blocks 9] [--calls 20]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import edge_runtime  # noqa: E402
from benchmarks import common  # noqa: E402

# name -> (op, input shape, attributes)
CASES = {
    "resnet_maxpool_3x3s2_64x112": ("MaxPool", (1, 64, 112, 112),
                                    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "sppf_maxpool_5x5s1_128x20": ("MaxPool", (1, 128, 20, 20), {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}),
    "sppf_maxpool_5x5s1_128x10": ("MaxPool", (1, 128, 10, 10), {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}),
    "unet_maxpool_2x2s2_32x64": ("MaxPool", (1, 32, 64, 64), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "avgpool_3x3s1_64x56": ("AveragePool", (1, 64, 56, 56),
                            {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 0}),
    "avgpool_2x2s2_128x28": ("AveragePool", (1, 128, 28, 28), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "gap_512x7": ("GlobalAveragePool", (1, 512, 7, 7), {}),
    "gap_576x7": ("GlobalAveragePool", (1, 576, 7, 7), {}),
    "gap_96x28": ("GlobalAveragePool", (1, 96, 28, 28), {}),
}


def model(op: str, shape: tuple[int, ...], attrs: dict) -> bytes:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], op,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    opts, so = edge_runtime.SessionOptions(), ort.SessionOptions()
    opts.intra_op_num_threads = so.intra_op_num_threads = 1
    print("| case | numba us | ort us | numba/ort |\n|---|---|---|---|")
    for name in args.cases:
        op, shape, attrs = CASES[name]
        m = model(op, shape, attrs)
        ours = edge_runtime.InferenceSession(m, opts, providers=["EdgeRuntimeExecutionProvider"])
        theirs = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
        pool = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(4)]
        np.testing.assert_allclose(ours.run(None, {"x": pool[0]})[0], theirs.run(None, {"x": pool[0]})[0],
                                   rtol=1e-5, atol=1e-6)
        times = common.interleave({"numba": lambda x: ours.run(None, {"x": x}),
                                   "ort": lambda x: theirs.run(None, {"x": x})},
                                  pool, blocks=args.blocks, calls=args.calls, clock=time.thread_time)
        print(f"| {name} | {common.median_ms(times['numba']) * 1e3:.1f} | {common.median_ms(times['ort']) * 1e3:.1f} "
              f"| {common.ratio(times['numba'], times['ort']):.2f} |")


if __name__ == "__main__":
    main()
