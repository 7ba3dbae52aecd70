"""Does ``sparsity="auto"`` ever lose to the dense path? Sweep input density per layer shape.

For each layer shape, a two-node model Relu -> MatMul / Conv (the Relu makes the layer a
sparse candidate) runs in edge_runtime with ``sparsity="auto"`` and ``"off"`` on inputs of a
given density; the two alternate in shuffled blocks with a pool of inputs (references §2).
Reported: median per-call time of each, the median of per-block ratios auto/off with its
90% bootstrap interval, and which kernel auto chose. Target (issue "Skip inactive
neurons"): auto/off <= 1.05 at every density. Single blocks swing +-10% on a shared
machine, so a cell counts as a loss only when its whole interval lies above 1.05.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/bench_dispatch.py [--quick]

``--sweep-1x1`` instead measures sparsity="force" against "off" over 12 1x1 conv shapes
at densities 0.05-1.0 (the data behind ``ops.conv_layer.conv_crossover_scale``'s 1x1 rule).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks import common  # noqa: E402
from edge_runtime import InferenceSession, SessionOptions  # noqa: E402

DENSITIES = (1.0, 0.7, 0.5, 0.35, 0.25, 0.2, 0.15, 0.1, 0.05)
# (name, input shape, weight shape, op); 1 thread, batch 1
LAYERS = (
    ("gemv 3072x768", (1, 3072), (3072, 768), "MatMul"),
    ("gemm 197x768x3072", (197, 768), (768, 3072), "MatMul"),
    ("conv3x3 128@28", (1, 128, 28, 28), (128, 128, 3, 3), "Conv"),
    ("conv3x3 32->64@56", (1, 32, 56, 56), (64, 32, 3, 3), "Conv"),
    ("conv3x3 64@56", (1, 64, 56, 56), (64, 64, 3, 3), "Conv"),
    ("conv3x3 256@14", (1, 256, 14, 14), (256, 256, 3, 3), "Conv"),
    ("conv1x1 256@14", (1, 256, 14, 14), (256, 256, 1, 1), "Conv"),
    ("conv1x1 64->256@56", (1, 64, 56, 56), (256, 64, 1, 1), "Conv"),
)


def _model(x_shape: tuple[int, ...], w_shape: tuple[int, ...], op: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal(w_shape) * 0.05).astype(np.float32), "w")
    attrs = {"pads": [w_shape[2] // 2] * 4} if op == "Conv" else {}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["r", "w"], ["y"], **attrs)]
    g = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(shape: tuple[int, ...], density: float, n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [(np.abs(rng.standard_normal(shape)) * (rng.random(shape) < density)).astype(np.float32)
            for _ in range(n)]


def _sweep(name: str, x_shape, w_shape, op: str, blocks: int, calls: int) -> list[dict]:
    opts = SessionOptions()
    opts.intra_op_num_threads = 1
    model = _model(x_shape, w_shape, op)
    auto, off = InferenceSession(model, opts, sparsity="auto"), InferenceSession(model, opts, sparsity="off")
    rows = []
    for density in DENSITIES:
        pool = _inputs(x_shape, density)
        # both contenders run on this thread at 1 thread: its CPU time ignores time slices
        # other jobs take on a shared machine
        times = common.interleave({"auto": lambda x: auto.run(None, {"x": x}),
                                   "off": lambda x: off.run(None, {"x": x})}, pool, blocks, calls,
                                  clock=time.thread_time)
        _, stats = auto.run_with_stats(None, {"x": pool[0]})
        kernel = next(n.kernel for n in stats.nodes if n.op_type.startswith("Fused"))
        lo, hi = common.ratio_interval(times["auto"], times["off"])
        rows.append({"layer": name, "density": density, "auto_ms": common.median_ms(times["auto"]),
                     "off_ms": common.median_ms(times["off"]), "auto_vs_off": common.ratio(times["auto"], times["off"]),
                     "auto_vs_off_ci90": [lo, hi], "kernel": kernel})
        print(f"{name:20s} density {density:4.2f}: auto/off {rows[-1]['auto_vs_off']:.2f} [{lo:.2f}, {hi:.2f}] "
              f"({kernel})", flush=True)
    return rows


#: 1x1 conv shapes (Cin, Cout, H=W) of the crossover sweep behind ops.conv_layer.conv_crossover_scale
SWEEP_1X1 = ((64, 256, 56), (256, 64, 56), (64, 64, 56), (128, 128, 28), (128, 512, 28), (512, 128, 28),
             (256, 256, 14), (256, 1024, 14), (1024, 256, 14), (512, 512, 7), (32, 128, 56), (16, 96, 56))
SWEEP_DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def sweep_1x1(blocks: int, calls: int) -> list[dict]:
    """force/off per 1x1 conv shape and density, and the interpolated break-even density."""
    opts = SessionOptions()
    opts.intra_op_num_threads = 1
    rows = []
    for cin, cout, hw in SWEEP_1X1:
        x_shape = (1, cin, hw, hw)
        model = _model(x_shape, (cout, cin, 1, 1), "Conv")
        force, off = InferenceSession(model, opts, sparsity="force"), InferenceSession(model, opts, sparsity="off")
        ratios = []
        for density in SWEEP_DENSITIES:
            times = common.interleave({"force": lambda x: force.run(None, {"x": x}),
                                       "off": lambda x: off.run(None, {"x": x})}, _inputs(x_shape, density),
                                      blocks, calls, clock=time.thread_time)
            ratios.append(common.ratio(times["force"], times["off"]))
        pts = list(zip(SWEEP_DENSITIES, ratios))
        below = [d for d, r in pts if r < 1.0]
        even = next((d0 + (1 - r0) * (d1 - d0) / (r1 - r0) for (d0, r0), (d1, r1) in zip(pts, pts[1:])
                     if r0 < 1.0 <= r1), None)
        rows.append({"shape": f"{cin}->{cout}@{hw}", "force_vs_off": dict(zip(map(str, SWEEP_DENSITIES), ratios)),
                     "break_even": even if even is not None else (1.0 if len(below) == len(pts) else 0.0)})
        print(f"1x1 {rows[-1]['shape']:14s} force/off " + " ".join(f"{r:.2f}" for r in ratios)
              + f"  break-even {rows[-1]['break_even']:.2f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 blocks x 3 calls (default 25 x 7)")
    parser.add_argument("--out", default=None, help="JSON path (default results/bench_dispatch.json, "
                        "or results/bench_crossover_1x1.json with --sweep-1x1)")
    parser.add_argument("--sweep-1x1", action="store_true",
                        help="instead: force vs off over 12 1x1 conv shapes (the 1x1 crossover rule's data)")
    args = parser.parse_args(argv)
    blocks, calls = (5, 3) if args.quick else (25, 7)
    if args.sweep_1x1:
        out = args.out or str(common.RESULTS / "bench_crossover_1x1.json")
        rows = sweep_1x1(7 if not args.quick else 3, 3)
        common.write_json(out, {"machine": common.machine_info(), "densities": SWEEP_DENSITIES, "rows": rows})
        print(f"Wrote {out}")
        return 0
    args.out = args.out or str(common.RESULTS / "bench_dispatch.json")
    rows = [r for layer in LAYERS for r in _sweep(*layer, blocks, calls)]
    worst = max(rows, key=lambda r: r["auto_vs_off"])
    losses = [r for r in rows if r["auto_vs_off_ci90"][0] > 1.05]
    common.write_json(args.out, {"machine": common.machine_info(), "blocks": blocks, "calls": calls, "rows": rows,
                                 "worst": worst, "losses": losses})
    print(common.markdown_table(
        ["layer", "density", "auto ms", "off ms", "auto/off", "90% interval", "auto kernel"],
        [[r["layer"], r["density"], r["auto_ms"], r["off_ms"], r["auto_vs_off"],
          "{:.2f}-{:.2f}".format(*r["auto_vs_off_ci90"]), r["kernel"]] for r in rows]))
    print(f"worst median auto/off: {worst['auto_vs_off']:.3f} ({worst['layer']} at density {worst['density']}, "
          "90% interval {:.2f}-{:.2f}); target <= 1.05.".format(*worst["auto_vs_off_ci90"]))
    print(f"cells whose whole 90% interval is above 1.05: {len(losses)}"
          + "".join(f"\n  {r['layer']} at density {r['density']}: {r['auto_vs_off']:.3f}" for r in losses))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
