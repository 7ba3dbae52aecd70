"""How sparse must a relufied YOLO-style backbone be, and at what input size, before zeros buy speed?

Issue 16's latency target (>= 1.3x onnxruntime on the original model, 1 thread) was missed at
28 px by every fine-tuned model: no layer is big enough there for a sparse island to pay for its
cut. Training at larger sizes does not fit a 2-core host, so this probe answers the question the
next training run depends on without training: it takes the YOLO-style backbone of
:mod:`benchmarks.experiments.relufy_models` (random weights, eval mode), replaces every SiLU by
ReLU and shifts each BatchNorm's bias, layer by layer on calibration images, so that its ReLU
zeroes a fraction ``T`` of its outputs per channel (what annealed ShiftedReLU thresholds do at
export: ``x - t`` folded into the bias, a plain ``Conv -> Relu`` graph). Inputs are Fashion-MNIST
test images resized to the probe's size. For each (size, T):

* end to end, 1 thread, thread CPU time, interleaved blocks (``benchmarks/common.py``): edge_runtime
  (``sparsity="auto"``, warm-up inputs = ``--warmup`` real images held out of the timing pool, so
  the engine measures real densities; with more than one, also a session warmed up on the one of
  them with the densest island inputs alone, ``edge_one_warmup``: what deciding on one atypical
  image costs) against onnxruntime on the relufied graph and on the ORIGINAL (SiLU) graph;
* what the engine decided (islands kept, their densities and dense/sparse times);
* per test image: edge and onnxruntime (relufied graph) times, the islands' input density and how
  many ran sparse (the images' densities differ from the warm-up images');
* per conv, on the numba engine: input density, sparse kernel (``force``) and dense (``off``) time.

Accuracy is not measured (random weights): this is the latency side only; the sparsity a real
fine-tune reaches at a given accuracy comes from relufy_fashion_mnist.py.

Run (about 11 minutes; the default grid; the engine cache off so every session decides anew)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE EDGE_RUNTIME_ENGINE_CACHE=off \
        python3 -m benchmarks.experiments.relufy_latency_probe \
        [--sizes 56 112 224] [--sparsity 0.8 0.9 0.95] [--widths 16 32 64 128] [--warmup 8]

Writes benchmarks/results/experiments_relufy_latency_probe.json and a plot of the speedup against
the ReLU sparsity per input size (.png beside it).
"""
from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import edge_runtime as er
from benchmarks import common
from benchmarks.experiments import fashion_mnist as fm
from benchmarks.experiments.relufy_models import yolo_backbone
from exporters.onnx_export import export_onnx, finalize

log = logging.getLogger(__name__)
OUT = common.RESULTS / "experiments_relufy_latency_probe.json"
TARGET = 1.3  # issue 16: >= 1.3x faster than onnxruntime on the original model


def images(size: int, count: int, start: int = 0) -> torch.Tensor:
    """Fashion-MNIST test images, normalised, resized (bilinear) to ``size`` px: (count, 1, size, size)."""
    x, _ = fm.load_split("test")
    t = torch.from_numpy(fm.normalized(x[start:start + count]))
    return t if size == 28 else nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)


def build(widths: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return yolo_backbone(widths=tuple(widths)).eval()


def build_like(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


@torch.no_grad()
def relufied(original: nn.Module, calib: torch.Tensor, sparsity: float) -> nn.Module:
    """A copy of ``original`` with ReLU for SiLU and every BatchNorm's bias lowered, in forward
    order, by its outputs' per-channel ``sparsity``-quantile on ``calib`` (earlier shifts applied)."""
    model = build_like(original)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.SiLU):
                setattr(module, name, nn.ReLU())
    for bn in [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]:
        seen: dict[str, torch.Tensor] = {}
        hook = bn.register_forward_hook(lambda _m, _i, out: seen.__setitem__("y", out))
        model(calib)
        hook.remove()
        y = seen["y"].transpose(0, 1).reshape(seen["y"].shape[1], -1)
        bn.bias -= torch.quantile(y, sparsity, dim=1)
    return model


def export(model: nn.Module, size: int) -> bytes:
    return finalize(export_onnx(model, torch.zeros(1, 1, size, size), dynamic_batch=False)).SerializeToString()


def per_conv(proto: bytes, pool: list[np.ndarray], runs: int) -> list[dict[str, Any]]:
    """Numba engine, per Conv: mean input density, median ms with the sparse kernel forced and dense."""
    so = er.SessionOptions()
    so.intra_op_num_threads = 1
    rows: dict[str, dict[str, Any]] = {}
    for mode in ("force", "off"):
        sess = er.InferenceSession(proto, so, sparsity=mode, providers=["EdgeRuntimeExecutionProvider"])
        name = sess.get_inputs()[0].name
        for i in range(runs):
            _, stats = sess.run_with_stats(None, {name: pool[i % len(pool)]})
            for n in stats.nodes:
                if not n.op_type.endswith("Conv"):
                    continue
                row = rows.setdefault(n.name, {"node": n.name, "density": [], "force": [], "off": []})
                row[mode].append(n.seconds)
                if n.density is not None and mode == "force":
                    row["density"].append(n.density)
    out = []
    for row in rows.values():
        force, off = 1e3 * statistics.median(row["force"]), 1e3 * statistics.median(row["off"])
        out.append({"node": row["node"], "density": round(float(np.mean(row["density"])), 3) if row["density"] else None,
                    "sparse_ms": round(force, 4), "dense_ms": round(off, 4), "sparse_over_dense": round(force / off, 3)})
    return out


def by_image(fns: dict[str, Any], edge: er.InferenceSession, name: str, pool: list[np.ndarray],
             calls: int) -> list[dict[str, Any]]:
    """Per pool image: edge (and ``edge_one_warmup`` when timed) and onnxruntime (relufied graph)
    median ms over ``3 * calls`` interleaved single calls, the mean density of the islands' inputs
    and how many islands ran sparse. The engine decides on its warm-up images; this shows what
    the others cost."""
    rows = []
    keys = [k for k in ("edge_auto", "edge_one_warmup", "ort_final") if k in fns]
    for i, x in enumerate(pool):
        t = common.interleave({k: fns[k] for k in keys}, [x], 3 * calls, 1, clock=time.thread_time)
        _, stats = edge.run_with_stats(None, {name: x})
        dens = [n.density for n in stats.nodes if n.density is not None]
        rows.append({"image": i, "edge_ms": round(common.median_ms(t["edge_auto"]), 4),
                     **({"edge_one_warmup_ms": round(common.median_ms(t["edge_one_warmup"]), 4)}
                        if "edge_one_warmup" in t else {}),
                     "ort_final_ms": round(common.median_ms(t["ort_final"]), 4),
                     "island_input_density": round(float(np.mean(dens)), 3) if dens else None,
                     "islands_sparse": sum(1 for n in stats.nodes if n.kernel == "sparse"), "islands": len(dens)})
    return rows


def engine_summary(sess: er.InferenceSession) -> dict[str, Any] | None:
    report = sess.engine_report
    return None if report is None else {
        "engine": report.engine, "outcome": report.outcome, "candidates": report.candidates,
        "line_check": report.line_check,
        "islands": [{"name": d.name, "expected_density": round(d.expected_density, 3),
                     "density_source": d.density_source,
                     "dense_ms": round(d.dense_ms, 4) if d.dense_ms else None,
                     "sparse_ms": round(d.sparse_ms, 4) if d.sparse_ms else None,
                     "crossover": round(d.crossover, 3), "kept": d.kept}
                    for d in report.islands]}


def densest(sess: er.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The feed whose sparse-capable layers see the densest inputs (mean over the nodes that report
    a density): the atypical image a one-image warm-up can land on."""
    def mean_density(feed: dict[str, np.ndarray]) -> float:
        dens = [n.density for n in sess.run_with_stats(None, feed)[1].nodes if n.density is not None]
        return float(np.mean(dens)) if dens else 0.0
    return max(feeds, key=mean_density)


def probe(original: nn.Module, size: int, sparsity: float, blocks: int, calls: int, warmup: int) -> dict[str, Any]:
    calib = images(size, 64, start=1000)
    pool = [x[None] for x in images(size, 16).numpy()]
    warm = [{"input": x[None]} for x in images(size, warmup, start=100).numpy()]  # held out of pool and calib
    model = relufied(original, calib, sparsity)
    protos = {"final": export(model, size), "original": export(original, size)}
    so = er.SessionOptions()
    so.intra_op_num_threads = 1
    edge = er.InferenceSession(protos["final"], so, sparsity="auto", warmup_feed=warm)
    one = er.InferenceSession(protos["final"], so, sparsity="auto", warmup_feed=densest(edge, warm)) \
        if warmup > 1 else None
    oso = ort.SessionOptions()
    oso.intra_op_num_threads = oso.inter_op_num_threads = 1
    theirs = {k: ort.InferenceSession(p, oso, providers=["CPUExecutionProvider"]) for k, p in protos.items()}
    name = edge.get_inputs()[0].name
    for sess in (edge, one):  # a small measured gain is checked on the first images run: before timing
        if sess is not None:
            sess.finish_line_check([{name: x} for x in pool])
    err = float(np.max(np.abs(edge.run(None, {name: pool[0]})[0] - theirs["final"].run(None, {name: pool[0]})[0])))
    fns = {"edge_auto": lambda x: edge.run(None, {name: x}),
           "ort_final": lambda x: theirs["final"].run(None, {name: x}),
           "ort_original": lambda x: theirs["original"].run(None, {name: x})}
    if one is not None:
        fns["edge_one_warmup"] = lambda x: one.run(None, {name: x})
    times = common.interleave(fns, pool, blocks, calls, clock=time.thread_time)
    lo, hi = common.ratio_interval(times["edge_auto"], times["ort_original"])
    per_image = by_image(fns, edge, name, pool, calls)
    convs = per_conv(protos["final"], pool, 8)
    dens = [c["density"] for c in convs if c["density"] is not None]
    return {
        "size": size, "relu_sparsity_target": sparsity,
        "mean_conv_input_density": round(float(np.mean(dens)), 3) if dens else None,
        "ms": {k: round(common.median_ms(v), 4) for k, v in times.items()},
        "speedup_vs_ort_original": round(1.0 / common.ratio(times["edge_auto"], times["ort_original"]), 3),
        "speedup_vs_ort_original_90ci": [round(1.0 / hi, 3), round(1.0 / lo, 3)],
        "speedup_vs_ort_final": round(1.0 / common.ratio(times["edge_auto"], times["ort_final"]), 3),
        **({"one_warmup_speedup_vs_ort_original": round(
            1.0 / common.ratio(times["edge_one_warmup"], times["ort_original"]), 3),
            "one_warmup_edge_slower_than_ort_final_on": sum(
                1 for r in per_image if r["edge_one_warmup_ms"] > r["ort_final_ms"]),
            "one_warmup_engine": engine_summary(one)} if one is not None else {}),
        "max_abs_err_vs_ort": err,
        "warmup_images": warmup,
        "engine": engine_summary(edge),
        "edge_slower_than_ort_final_on": sum(1 for r in per_image if r["edge_ms"] > r["ort_final_ms"]),
        "per_image": per_image,
        "convs_sparse_wins": sum(1 for c in convs if c["sparse_over_dense"] < 1.0),
        "convs": convs,
    }


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for size in doc["sizes"]:
        rows = sorted((r for r in doc["runs"] if r["size"] == size), key=lambda r: r["relu_sparsity_target"])
        zeros = [100 * r["relu_sparsity_target"] for r in rows]
        both = "one_warmup_speedup_vs_ort_original" in rows[0]  # a one-image session was timed too
        line, = ax.plot(zeros, [r["speedup_vs_ort_original"] for r in rows], "o-",
                        label=f"{size} x {size} px" + (f", decided on {rows[0]['warmup_images']} images" if both else ""))
        if both:
            ax.plot(zeros, [r["one_warmup_speedup_vs_ort_original"] for r in rows], "x--", color=line.get_color(),
                    label=f"{size} x {size} px, decided on the densest one alone")
    ax.axhline(TARGET, color="gray", ls="--", label=f"issue 16 target ({TARGET}x)")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xlabel("zeros in every ReLU output (%)")
    ax.set_ylabel("speed-up vs onnxruntime\non the SiLU original (x, higher = faster)")
    ax.set_title(f"YOLO-style backbone, widths {'-'.join(map(str, doc['widths']))}, 1 thread\n{doc['machine'].get('cpu_model', '')}, sparse kernels: {doc['machine'].get('sparse_code_path', '?')}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[56, 112, 224], help="input sizes (px)")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9, 0.95],
                        help="fraction of zeros each ReLU is shifted to (0-1)")
    parser.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 128], help="backbone widths")
    parser.add_argument("--blocks", type=int, default=11, help="interleaved timing rounds (medians over them)")
    parser.add_argument("--calls", type=int, default=5, help="calls per round")
    parser.add_argument("--warmup", type=int, default=8,
                        help="warm-up images the engine decides on (test images held out of the timing pool); "
                             "above 1, a session warmed up on the densest of them alone is timed beside it")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON to write (the plot goes beside it as .png)")
    a = parser.parse_args(argv)
    for size in a.sizes:
        if size < 16:
            parser.error(f"--sizes {size}: expected at least 16 px (the backbone halves the image four times)")
    for flag, values, example in (("--widths", a.widths, "16 32 64 128"), ("--blocks", [a.blocks], "11"),
                                  ("--calls", [a.calls], "5"), ("--warmup", [a.warmup], "8")):
        if min(values) < 1:
            parser.error(f"{flag} {' '.join(map(str, values))}: expected positive integers, e.g. {flag} {example}")
    for s in a.sparsity:
        if not 0.0 <= s < 1.0:
            parser.error(f"--sparsity {s}: expected a fraction in [0, 1), e.g. 0.9 for 90% zeros")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    original = build(a.widths)
    runs = []
    for size in a.sizes:
        for sparsity in a.sparsity:
            r = probe(original, size, sparsity, a.blocks, a.calls, a.warmup)
            runs.append(r)
            print(f"{size:4d} px, {100 * sparsity:.0f}% zeros: conv-input density {r['mean_conv_input_density']}, "
                  f"edge {r['ms']['edge_auto']:.3f} ms, ort original {r['ms']['ort_original']:.3f} ms, relufied "
                  f"{r['ms']['ort_final']:.3f} ms: {r['speedup_vs_ort_original']:.2f}x "
                  f"[{r['speedup_vs_ort_original_90ci'][0]:.2f}, {r['speedup_vs_ort_original_90ci'][1]:.2f}]; "
                  f"engine {r['engine']['engine'] if r['engine'] else '-'}, sparse beats dense on "
                  f"{r['convs_sparse_wins']}/{len(r['convs'])} convs; edge slower than onnxruntime (same graph) "
                  f"on {r['edge_slower_than_ort_final_on']}/{len(r['per_image'])} images"
                  + (f"; warmed up on the densest warm-up image alone: {r['ms']['edge_one_warmup']:.3f} ms, "
                     f"{r['one_warmup_speedup_vs_ort_original']:.2f}x, slower than onnxruntime (same graph) on "
                     f"{r['one_warmup_edge_slower_than_ort_final_on']}/{len(r['per_image'])} images"
                     if "edge_one_warmup" in r["ms"] else ""), flush=True)
    doc = {"machine": common.machine_info(), "widths": a.widths,
           "sizes": a.sizes, "blocks": a.blocks, "calls_per_block": a.calls, "warmup_images": a.warmup,
           "clock": "thread_time",
           "threads": 1, "runs": runs}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    common.write_json(a.out, doc)
    plot(doc, a.out.with_suffix(".png"))
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}")
    return doc


if __name__ == "__main__":
    main()
