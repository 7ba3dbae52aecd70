"""Per-op micro-benchmarks vs onnxruntime: GELU forms, LayerNormalization, Softmax, depthwise Conv,
RoiAlign and GridSample.

Each case is a small ONNX model (one op, or the GELU subgraph an exporter emits) that
both runtimes load: edge_runtime plans it (passes, builders) and we time
``executor.execute`` on the plan (no feed validation), onnxruntime times
``session.run`` with the same thread count. Shapes are ViT/DeiT-tiny's (197 tokens,
dim 192, MLP 768, 3 heads) and MobileNetV2's depthwise layers. The contenders alternate
in blocks (A B A B ...), each call gets a different input from a small pool, one warm-up
block first; we report medians and the median of per-pair ratios (ours / onnxruntime:
< 1 means we are faster). JSON goes to benchmarks/results/bench_ops.json.

Run (unset the OpenBLAS overrides in the benchmark command only, references §2; on the default
onnxruntime engine a one-op model is one onnxruntime session, so pin edge_runtime's kernels)::

    EDGE_RUNTIME_DENSE_ENGINE=numba env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python3 benchmarks/bench_ops.py [--quick] [--only gelu] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import edge_runtime as er
from edge_runtime import executor

RESULTS = Path(__file__).parent / "results" / "bench_ops.json"


@dataclass(frozen=True)
class Case:
    """One benchmark: a model, its input shape and how often the op occurs in its network."""

    name: str
    model: onnx.ModelProto
    shape: tuple[int, ...]
    count: int = 1


def _model(nodes: list, shape: tuple[int, ...], out_shape: tuple[int, ...] | None, inits: dict,
           opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape) if out_shape else None)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def gelu_cases() -> list[Case]:
    """GELU on the MLP hidden activations (197 x 768 per block in DeiT-tiny, 12 blocks)."""
    shape = (197, 768)
    mul = helper.make_node
    erf_form = [mul("Div", ["x", "sqrt2"], ["d"]), mul("Erf", ["d"], ["e"]), mul("Add", ["e", "one"], ["s"]),
                mul("Mul", ["x", "s"], ["m"]), mul("Mul", ["m", "half"], ["y"])]
    tanh_form = [mul("Mul", ["x", "x"], ["x2"]), mul("Mul", ["x", "x2"], ["x3"]), mul("Mul", ["c", "x3"], ["cx3"]),
                 mul("Add", ["x", "cx3"], ["inner"]), mul("Mul", ["k", "inner"], ["u"]), mul("Tanh", ["u"], ["t"]),
                 mul("Add", ["one", "t"], ["s"]), mul("Mul", ["x", "s"], ["m"]), mul("Mul", ["half", "m"], ["y"])]
    consts = {"sqrt2": math.sqrt(2), "one": 1.0, "half": 0.5, "c": 0.044715, "k": math.sqrt(2 / math.pi)}
    return [
        Case("gelu_erf_subgraph_197x768", _model(erf_form, shape, shape, consts), shape, 12),
        Case("gelu_tanh_subgraph_197x768", _model(tanh_form, shape, shape, consts), shape, 12),
        Case("gelu_op20_197x768", _model([mul("Gelu", ["x"], ["y"])], shape, shape, {}, opset=20), shape, 12),
        Case("gelu_op20_197x3072", _model([mul("Gelu", ["x"], ["y"])], (197, 3072), (197, 3072), {}, opset=20),
             (197, 3072), 0),
    ]


def norm_cases() -> list[Case]:
    """LayerNormalization over the last axis and Softmax over attention rows."""
    rng = np.random.default_rng(1)
    cases = []
    for dim, count in ((192, 25), (768, 0)):
        inits = {"scale": rng.standard_normal(dim) + 1.0, "bias": rng.standard_normal(dim)}
        node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1, epsilon=1e-6)
        cases.append(Case(f"layernorm_197x{dim}", _model([node], (1, 197, dim), (1, 197, dim), inits), (1, 197, dim),
                          count))
    for shape, count in (((1, 3, 197, 197), 12), ((197, 768), 0)):
        node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
        cases.append(Case(f"softmax_{'x'.join(map(str, shape))}", _model([node], shape, shape, {}), shape, count))
    return cases


# (name, channels, input size, stride, count in MobileNetV2)
DEPTHWISE = [("dw32_112", 32, 112, 1, 1), ("dw144_56", 144, 56, 1, 1), ("dw144s2_56", 144, 56, 2, 1),
             ("dw192_28", 192, 28, 1, 2), ("dw192s2_28", 192, 28, 2, 1), ("dw384_14", 384, 14, 1, 4),
             ("dw576_14", 576, 14, 1, 2), ("dw576s2_14", 576, 14, 2, 1), ("dw960_7", 960, 7, 1, 3)]


def depthwise_cases() -> list[Case]:
    """MobileNetV2's 3x3 depthwise convs + ReLU6 (Clip), which the planner fuses."""
    rng = np.random.default_rng(2)
    cases = []
    for name, ch, size, stride, count in DEPTHWISE:
        inits = {"w": rng.standard_normal((ch, 1, 3, 3)) * 0.3, "b": rng.standard_normal(ch) * 0.1,
                 "lo": 0.0, "hi": 6.0}
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=ch, kernel_shape=[3, 3],
                                  pads=[1, 1, 1, 1], strides=[stride, stride]),
                 helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
        cases.append(Case(name, _model(nodes, (1, ch, size, size), None, inits), (1, ch, size, size), count))
    return cases


def _time_case(case: Case, threads: int, blocks: int, calls: int) -> dict:
    so = er.SessionOptions()
    so.intra_op_num_threads = threads
    ours = er.InferenceSession(case.model.SerializeToString(), so)
    oso = ort.SessionOptions()
    oso.intra_op_num_threads, oso.inter_op_num_threads = threads, 1
    theirs = ort.InferenceSession(case.model.SerializeToString(), oso, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal(case.shape).astype(np.float32) * 2 for _ in range(calls)]
    plan = ours.plan
    err = max(float(np.max(np.abs(executor.execute(plan, {"x": x}, ["y"])[0] - theirs.run(None, {"x": x})[0])))
              for x in pool[:2])
    a_times: list[float] = []
    b_times: list[float] = []
    for block in range(blocks + 1):  # block 0 warms up
        ta = tb = 0.0
        for x in pool:
            t0 = time.perf_counter()
            executor.execute(plan, {"x": x}, ["y"])
            ta += time.perf_counter() - t0
        for x in pool:
            t0 = time.perf_counter()
            theirs.run(None, {"x": x})
            tb += time.perf_counter() - t0
        if block:
            a_times.append(ta / calls)
            b_times.append(tb / calls)
    return {"case": case.name, "shape": list(case.shape), "count": case.count, "max_abs_err": err,
            "steps": [s.node.op_type for s in plan.steps],
            "ours_ms": statistics.median(a_times) * 1e3, "ort_ms": statistics.median(b_times) * 1e3,
            "ratio": statistics.median(a / b for a, b in zip(a_times, b_times))}


def sampling_cases() -> list[Case]:
    """RoiAlign as torchvision's Faster R-CNN box head calls it (MultiScaleRoIAlign: 7x7, sampling_ratio 2,
    aligned=False, 1000 proposals on a stride-16 map of an 800x1088 image) and GridSample as an OCR
    rectifier (a 32x100 crop) and a spatial transformer on a feature map call it."""
    rng = np.random.default_rng(3)
    corner = rng.uniform(0, 1000, (1000, 2))
    rois = np.concatenate([corner, corner + rng.uniform(16, 300, (1000, 2))], 1)
    roi = helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], coordinate_transformation_mode="output_half_pixel",
                           output_height=7, output_width=7, sampling_ratio=2, spatial_scale=1 / 16)
    roi_model = _model([roi], (1, 256, 50, 68), (1000, 256, 7, 7), {"rois": rois})
    roi_model.graph.initializer.append(numpy_helper.from_array(np.zeros(1000, np.int64), "idx"))
    cases = [Case("roialign_1000x256x7x7", roi_model, (1, 256, 50, 68), 1)]
    for name, shape, mode in (("gridsample_ocr_3x32x100", (1, 3, 32, 100), "linear"),
                              ("gridsample_64x64x256", (1, 64, 64, 256), "linear"),
                              ("gridsample_cubic_3x32x100", (1, 3, 32, 100), "cubic")):
        grid = rng.uniform(-1.05, 1.05, (1, *shape[2:], 2))
        node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode="border")
        cases.append(Case(name, _model([node], shape, shape, {"grid": grid}, opset=20), shape, 1))
    return cases


GROUPS = {"gelu": gelu_cases, "norm": norm_cases, "depthwise": depthwise_cases, "sampling": sampling_cases}


def main() -> None:
    """Run the selected groups and write the JSON results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer blocks (smoke run)")
    ap.add_argument("--only", nargs="*", choices=sorted(GROUPS), default=sorted(GROUPS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    blocks, calls = (3, 3) if args.quick else (11, 5)
    try:
        from threadpoolctl import threadpool_info
        blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        blas = []
    result = {"machine": platform.machine(), "numpy": np.__version__, "onnxruntime": ort.__version__,
              "blas": blas, "threads": args.threads, "blocks": blocks, "calls_per_block": calls, "cases": []}
    for group in args.only:
        for case in GROUPS[group]():
            row = _time_case(case, args.threads, blocks, calls)
            result["cases"].append({"group": group, **row})
            print(f"{row['case']:28s} ours {row['ours_ms']:8.3f} ms  ort {row['ort_ms']:8.3f} ms  "
                  f"ratio {row['ratio']:5.2f}  err {row['max_abs_err']:.1e}  {'+'.join(row['steps'])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
