"""Tiny models: edge_runtime's per-call cost on top of onnxruntime (issue 14), before/after code.

On a 0.25 ms model every microsecond between ``run`` and onnxruntime is 0.4% of the latency,
so the promise "edge_runtime <= 1.05x onnxruntime on dense models" is decided by the wrapper.

Models (batch 1, random weights unless said): ``demo_cnn``, the demo's shipped InspectionCNN
(``exporters.demo.models.load_pretrained("cnn")``) exported as the demo does (calibrated
annotations, dynamic batch; 3x64x64, fed demo test images); ``mnv3_28`` and ``mnv3_96``, the
MobileNetV3-small-style net of benchmarks/experiments/relufy_models.py relufied (every
Hardswish/ReLU a FATReLU(0.3): GreaterOrEqual + Where in ONNX) and exported like the relufy
experiment (dynamo + ``exporters.onnx_export.finalize``) at 1x28x28 and 1x96x96; and
``cnn_sparse``, the 64-128-256 CNN of bench_models.py (~10% density, sparse islands).

Contenders, interleaved in one process (benchmarks/common.py: shuffled blocks, medians, median
of per-block ratios), 1 thread, thread CPU time: ``ort`` (plain onnxruntime, ORT_ENABLE_ALL,
intra/inter 1) and ``edge`` (onnxruntime engine, sparsity auto, the first pool input as warm-up
feed), each called two ways: ``run(None, {name: x})`` with the name looked up once, and
``*_gi``: ``run(None, {sess.get_inputs()[0].name: x})`` as the relufy experiment and many
users' loops do. Session creation (median of 5, after one creation fills the engine's decision
cache) is timed against onnxruntime's too.

``--before TREE`` also runs edge_runtime from another checkout (e.g. ``git -C /work/main archive
215830e | tar -x -C /tmp/before``): each tree runs in its own process against its own
onnxruntime session, the trees alternating ``--repeats`` times; the JSON keeps every repeat and
the table shows medians.

Run::

    python benchmarks/bench_tiny.py [--before /tmp/before] [--repeats 3] [--models demo_cnn ...] \
        [--onnx NAME=model.onnx ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("demo_cnn", "mnv3_28", "mnv3_96", "cnn_sparse")


# -- models (parent process: needs torch) ----------------------------------------------------------

def _relufied_mobilenet(side: int, folder: Path) -> tuple[Path, list]:
    import numpy as np
    import torch

    from benchmarks.experiments.relufy_models import mobilenet_v3_small
    from exporters.onnx_export import export_onnx, finalize
    from exporters.sparsity import FATReLU

    def relufy(m: torch.nn.Module) -> torch.nn.Module:
        for name, child in m.named_children():
            setattr(m, name, FATReLU(0.3)) if isinstance(child, (torch.nn.Hardswish, torch.nn.ReLU)) else relufy(child)
        return m

    torch.manual_seed(0)
    model = relufy(mobilenet_v3_small()).eval()
    proto = finalize(export_onnx(model, torch.zeros(1, 1, side, side), dynamic_batch=False))
    path = folder / f"mnv3_{side}.onnx"
    path.write_bytes(proto.SerializeToString())
    rng = np.random.default_rng(11)
    return path, [rng.standard_normal((1, 1, side, side)).astype(np.float32) for _ in range(4)]


def _demo_cnn(folder: Path, quantize: str | None = None) -> tuple[Path, list]:
    """The demo's shipped CNN exported as the demo does (``quantize="int8"``: its int8 model)."""
    import exporters
    from exporters.demo.dataset import DemoDataConfig, load_splits, preprocessing, to_tensor
    from exporters.demo.models import load_pretrained

    config = DemoDataConfig()
    splits = load_splits(config)
    calib = to_tensor(splits["train"][0][:64])
    model = load_pretrained("cnn").eval()
    report = exporters.calibrate(model, calib, keep_inputs=len(calib))
    exporters.export(model, calib[:1], folder / "demo_cnn", calibration=report, formats=("onnx",),
                     preprocessing=preprocessing(config), overwrite=True, name="demo-cnn", quantize=quantize)
    test = to_tensor(splits["test"][0][:4]).numpy()
    model = "model.int8.onnx" if quantize else "model.onnx"
    return folder / "demo_cnn" / model, [test[i:i + 1] for i in range(4)]


def _cnn_sparse(folder: Path) -> tuple[Path, list]:
    import numpy as np
    import torch

    from benchmarks.bench_models import _sparse_cnn
    from tests import zoo

    path = zoo.export_onnx(_sparse_cnn().eval(), torch.zeros(1, 1, 28, 28), folder / "cnn_sparse.onnx",
                           dynamo=False, opset=17, dynamic_batch=False)
    gen = torch.Generator().manual_seed(11)
    return path, [torch.randn((1, 1, 28, 28), generator=gen).numpy() for _ in range(4)]


def _given(path: str) -> tuple[Path, list]:
    """A model file as it is, fed N(0, 1) inputs of its input's shape (free dimensions 1)."""
    import numpy as np
    import onnxruntime as ort

    inp = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    rng = np.random.default_rng(11)
    return Path(path), [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]


def build(names: list[str], folder: Path, given: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Export the models (``given``: name -> .onnx file, used as is); name -> {"path", "pool" (a .npy
    file of the 4 inputs)}."""
    import numpy as np

    makers = {"demo_cnn": _demo_cnn, "mnv3_28": lambda f: _relufied_mobilenet(28, f),
              "mnv3_96": lambda f: _relufied_mobilenet(96, f), "cnn_sparse": _cnn_sparse}
    makers |= {name: (lambda f, p=p: _given(p)) for name, p in (given or {}).items()}
    out = {}
    for name in [*names, *(given or {})]:
        path, pool = makers[name](folder)
        np.save(folder / f"{name}_pool.npy", np.stack(pool))
        out[name] = {"path": str(path), "pool": str(folder / f"{name}_pool.npy")}
    return out


# -- one tree, in its own process -------------------------------------------------------------------

def worker(models: dict[str, dict[str, Any]], blocks: int, calls: int) -> dict[str, Any]:
    """Time ort against this process's edge_runtime on every model (see the module docstring)."""
    import numpy as np
    import onnxruntime as ort

    import edge_runtime
    from benchmarks import common

    out: dict[str, Any] = {"edge_runtime": edge_runtime.__file__}
    for name, spec in models.items():
        pool = list(np.load(spec["pool"]))

        def make_ort() -> Any:
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            return ort.InferenceSession(spec["path"], so, providers=["CPUExecutionProvider"])

        def make_edge() -> Any:
            opts = edge_runtime.SessionOptions()
            opts.intra_op_num_threads = 1
            return edge_runtime.InferenceSession(spec["path"], opts, providers=["CPUExecutionProvider"],
                                                 sparsity="auto", warmup_feed={feed: pool[0]})

        theirs = make_ort()
        feed = theirs.get_inputs()[0].name
        t0 = time.perf_counter()
        ours = make_edge()
        first_s = time.perf_counter() - t0
        ours.finish_line_check([{feed: x} for x in pool])  # a small measured gain is checked before timing
        create = common.interleave({"ort": lambda _: make_ort(), "edge": lambda _: make_edge()}, [None], 5, 1)
        fns = {"ort": lambda x: theirs.run(None, {feed: x}), "edge": lambda x: ours.run(None, {feed: x}),
               "ort_gi": lambda x: theirs.run(None, {theirs.get_inputs()[0].name: x}),
               "edge_gi": lambda x: ours.run(None, {ours.get_inputs()[0].name: x})}
        times = common.interleave(fns, pool, blocks, calls, clock=time.thread_time)
        report = ours.engine_report
        out[name] = {
            "providers": ours.get_providers(), "outcome": None if report is None else report.outcome,
            "ms": {k: common.median_ms(v) for k, v in times.items()},
            "ratio": {"edge": common.ratio(times["edge"], times["ort"]),
                      "edge_gi": common.ratio(times["edge_gi"], times["ort_gi"])},
            "ratio_interval_90": {"edge": common.ratio_interval(times["edge"], times["ort"]),
                                  "edge_gi": common.ratio_interval(times["edge_gi"], times["ort_gi"])},
            "create_s": {"edge_first": first_s, "ort": common.median_ms(create["ort"]) / 1e3,
                         "edge_cached": common.median_ms(create["edge"]) / 1e3},
            "block_seconds": times,
        }
    return out


def _run_tree(tree: Path, models: dict[str, Any], blocks: int, calls: int, cache: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{ROOT}", EDGE_RUNTIME_ENGINE_CACHE=cache)
    args = json.dumps({"models": models, "blocks": blocks, "calls": calls})
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", args], env=env,
                          capture_output=True, text=True, timeout=3600, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"worker for {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(runs: dict[str, list[dict[str, Any]]], models: list[str]) -> str:
    from benchmarks import common

    labels = list(runs)
    header = ["model", "edge runs"] + [f"{c} ({lab})" for lab in labels for c in ("ort ms", "edge ms", "edge/ort",
                                                                                  "with get_inputs")]
    rows = []
    for m in models:
        row: list[Any] = [m, runs[labels[-1]][0][m]["providers"]]
        for lab in labels:
            reps = [r[m] for r in runs[lab]]
            row += [statistics.median(r["ms"]["ort"] for r in reps), statistics.median(r["ms"]["edge"] for r in reps),
                    statistics.median(r["ratio"]["edge"] for r in reps),
                    statistics.median(r["ratio"]["edge_gi"] for r in reps)]
        rows.append(row)
    creation = [["model"] + [f"{c} ({lab})" for lab in labels for c in ("ort create ms", "edge create ms (cached)",
                                                                        "/ort", "edge first ms")]]
    for m in models:
        row = [m]
        for lab in labels:
            reps = [r[m]["create_s"] for r in runs[lab]]
            o, e = (statistics.median(r[k] for r in reps) * 1e3 for k in ("ort", "edge_cached"))
            row += [o, e, e / o, statistics.median(r["edge_first"] for r in reps) * 1e3]
        creation.append(row)
    return common.markdown_table(header, rows) + "\n\n" + common.markdown_table(creation[0], creation[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--before", default=None, help="another checkout's root, run alternately with this tree")
    parser.add_argument("--repeats", type=int, default=3, help="processes per tree, alternating (medians shown)")
    parser.add_argument("--blocks", type=int, default=21)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--onnx", nargs="*", default=[], metavar="NAME=PATH",
                        help="also time these model files as they are (e.g. the relufy experiment's final model)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(worker(job["models"], job["blocks"], job["calls"]), default=str))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks import common

    trees = {"after": ROOT} if args.before is None else {"before": Path(args.before).resolve(), "after": ROOT}
    result: dict[str, Any] = {"machine": common.machine_info(), "threads": 1, "clock": "thread_time",
                              "blocks": args.blocks, "calls_per_block": args.calls, "pool": 4,
                              "trees": {k: str(v) for k, v in trees.items()}, "onnx": args.onnx,
                              "runs": {k: [] for k in trees}}
    with tempfile.TemporaryDirectory() as tmp:
        given = dict(item.split("=", 1) for item in args.onnx)
        models = build(args.models, Path(tmp), given)
        names = list(models)
        caches = {label: os.path.join(tmp, f"engine_{label}") for label in trees}
        for rep in range(args.repeats):
            for label, tree in trees.items():
                res = _run_tree(tree, models, args.blocks, args.calls, caches[label])
                result["runs"][label].append(res)
                print(f"{label} #{rep}: " + ", ".join(f"{m} {res[m]['ratio']['edge']:.3f}x "
                                                      f"(get_inputs {res[m]['ratio']['edge_gi']:.3f}x)"
                                                      for m in names), flush=True)
    result["table"] = _table(result["runs"], names)
    print(result["table"])
    out = args.out or common.RESULTS / "bench_tiny.json"
    print(f"wrote {common.write_json(out, result)}")


if __name__ == "__main__":
    if "--worker" not in sys.argv:
        sys.path.insert(0, str(ROOT))
    main()
