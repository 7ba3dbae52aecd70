"""End to end int8: a FATReLU CNN (Fashion-MNIST) exported with ``quantize="int8"``, edge_runtime vs onnxruntime.

The 64-128-256 ReLU CNN of benchmarks/experiments/cnn_fatrelu.py is trained (``--epochs`` on
``--train`` images; cached in ``--checkpoint``), given FATReLU thresholds for ``--target``
sparsity and fine-tuned with them fixed (``--finetune-epochs``), then exported through
``exporters.export(..., quantize="int8")`` (onnxruntime's static quantizer, QDQ, on 256
held-out training images). Reported:

- accuracy on the 10k test images of the fp32 and the int8 model (onnxruntime), and the
  agreement of edge_runtime's numba engine on the int8 model with onnxruntime's int8 outputs;
- the sparsity of the conv-feeding activations (PyTorch, test images);
- batch-1 latency, 1 thread, thread CPU time, interleaved blocks, pool of 32 test images:
  onnxruntime int8 and fp32 on the exported files and on the same files with every FATReLU as
  the bit-identical ThresholdedRelu (``*_trelu``: the fastest form for onnxruntime, whose int8
  FATReLU is a per-element branching QLinearWhere), edge_runtime on the int8 model (as installed: the engine picks
  onnxruntime or its own kernels; and numba-only, whose QLinearConvs run the zero-skipping
  int8 kernels after the QDQ fusion) and on the fp32 model; per-node times of numba-only int8.

Run (about 6 min on 2 cores; unset the OpenBLAS variables that slow current numpy)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 -m benchmarks.bench_int8_model

Writes benchmarks/results/bench_int8_model.json (with the CPU and the code path).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.experiments import cnn_fatrelu as cf  # noqa: E402

log = logging.getLogger("bench_int8_model")
OUT = Path(__file__).resolve().parent / "results" / "bench_int8_model.json"


def _ort(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _edge(path: Path, numba_only: bool, warm: np.ndarray) -> Any:
    import edge_runtime

    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = 1
    providers = ["EdgeRuntimeExecutionProvider"] if numba_only else None
    import onnx

    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    return edge_runtime.InferenceSession(str(path), opts, providers, warmup_feed={name: warm[:1]})


def _logits(sess: Any, x: np.ndarray, batch: int) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def _accuracy(bundle: Path, data: dict, agree_images: int) -> dict[str, float]:
    x, y = data["x_test"].numpy(), data["y_test"].numpy()
    fp32 = _logits(_ort(bundle / "model.onnx"), x, 1000).argmax(1)
    int8 = _logits(_ort(bundle / "model.int8.onnx"), x, 1000)
    edge = _logits(_edge(bundle / "model.int8.onnx", True, x), x[:agree_images], 1)
    return {"fp32_accuracy": 100.0 * float((fp32 == y).mean()), "int8_accuracy": 100.0 * float(
        (int8.argmax(1) == y).mean()), "drop_points": 100.0 * float((fp32 == y).mean() - (int8.argmax(1) == y).mean()),
        "int8_agreement_with_fp32": 100.0 * float((int8.argmax(1) == fp32).mean()),
        "edge_numba_int8_max_abs_vs_onnxruntime_int8": float(np.abs(edge - int8[:agree_images]).max()),
        "edge_numba_int8_agreement": 100.0 * float((edge.argmax(1) == int8[:agree_images].argmax(1)).mean())}


def _rewritten(path: Path) -> Path:
    """The model with its FATReLUs as ThresholdedRelu (edge_runtime.engine.rewrite, exact): what
    onnxruntime runs fastest, so the fairest onnxruntime figure (its QLinearWhere, the int8 FATReLU
    it fuses otherwise, branches per element)."""
    import onnx

    from edge_runtime.engine.rewrite import fatrelu_to_thresholded_relu

    model = onnx.load(str(path))
    fatrelu_to_thresholded_relu(model)
    out = path.with_name(path.stem + ".trelu.onnx")
    onnx.save(model, str(out))
    return out


def _latency(bundle: Path, pool: np.ndarray, blocks: int, calls: int) -> dict[str, Any]:
    sessions = {"onnxruntime_int8": _ort(bundle / "model.int8.onnx"), "onnxruntime_fp32": _ort(bundle / "model.onnx"),
                "onnxruntime_int8_trelu": _ort(_rewritten(bundle / "model.int8.onnx")),
                "onnxruntime_fp32_trelu": _ort(_rewritten(bundle / "model.onnx")),
                "edge_int8": _edge(bundle / "model.int8.onnx", False, pool),
                "edge_numba_int8": _edge(bundle / "model.int8.onnx", True, pool),
                "edge_fp32": _edge(bundle / "model.onnx", False, pool)}
    name = sessions["onnxruntime_int8"].get_inputs()[0].name
    feeds = [{name: pool[i:i + 1]} for i in range(len(pool))]
    calls_ = {k: (lambda f, s=s: s.run(None, f)) for k, s in sessions.items()}
    times = common.interleave(calls_, feeds, blocks, calls, clock=time.thread_time)
    base, fast = times["onnxruntime_int8"], times["onnxruntime_int8_trelu"]
    nodes = _node_times(sessions["edge_numba_int8"], feeds)
    return {"ms": {k: round(common.median_ms(v), 4) for k, v in times.items()},
            "speedup_vs_onnxruntime_int8": {k: round(common.ratio(base, v), 3) for k, v in times.items()},
            "speedup_interval_90": {k: [round(r, 3) for r in common.ratio_interval(base, v)] for k, v in times.items()},
            # against onnxruntime's fastest form of the same int8 model (its QLinearWhere avoided)
            "speedup_vs_onnxruntime_int8_trelu": {k: round(common.ratio(fast, v), 3) for k, v in times.items()},
            "speedup_vs_onnxruntime_int8_trelu_interval_90": {
                k: [round(r, 3) for r in common.ratio_interval(fast, v)] for k, v in times.items()},
            "providers": {k: list(s.get_providers()) for k, s in sessions.items() if k.startswith("edge")},
            "edge_numba_int8_nodes": nodes}


def _node_times(sess: Any, feeds: list[dict]) -> list[dict[str, Any]]:
    per: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for feed in feeds:
        _, stats = sess.run_with_stats(None, feed)
        for row in stats.nodes:
            per.setdefault(row.name, []).append(1e3 * row.seconds)
            ops[row.name] = row.op_type
    rows = [{"node": k, "op": ops[k], "ms": round(float(np.median(v)), 4)} for k, v in per.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train", type=int, nargs=2, default=(0, 20000), metavar=("START", "END"))
    p.add_argument("--target", type=float, default=0.9, help="FATReLU threshold sparsity target")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "bench_int8_cnn.pt")
    p.add_argument("--blocks", type=int, default=15)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    from exporters import export
    from exporters.sparsity import activation_sparsity
    from exporters.activation_flow import find_fed_activations

    torch.set_num_threads(1)
    cfg = cf.CNNConfig(epochs=args.epochs, train=tuple(args.train), targets=(args.target,),
                       finetune_epochs=args.finetune_epochs)
    data = cf.load(cfg)
    model, train_s = cf.train_baseline(cfg, data, args.checkpoint)
    names = cf.conv_fed(find_fed_activations(model, data["x_calib"][:2]), model)
    _, tuned, fit_log = cf.threshold_and_finetune(model, args.target, data, cfg)
    sp = activation_sparsity(tuned, list(data["x_test"].split(1000)), names)
    sparsity = {"per_activation": {n: round(sp[n], 4) for n in names}, "mean": float(np.mean([sp[n] for n in names]))}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        export(tuned, data["x_calib"][:1], bundle, calibration=data["x_calib"][:256], formats=["onnx"],
               quantize="int8", labels=[str(i) for i in range(10)])
        acc = _accuracy(bundle, data, agree_images=500)
        pool = data["pool"] if data["pool"].ndim == 4 else data["pool"][:, None]  # (32, 1, 28, 28)
        lat = _latency(bundle, np.ascontiguousarray(pool, np.float32), args.blocks, args.calls)
    result = {"machine": common.machine_info(), "config": dataclasses.asdict(cfg), "train_seconds": train_s,
              "fit": {k: v for k, v in fit_log.items() if k != "thresholds"}, "conv_fed_sparsity": sparsity,
              "accuracy": acc, "latency": lat}
    common.write_json(args.out, result)
    log.warning("accuracy %s", acc)
    log.warning("latency ms %s; speedup vs onnxruntime int8 %s; vs its ThresholdedRelu form %s", lat["ms"],
                lat["speedup_vs_onnxruntime_int8"], lat["speedup_vs_onnxruntime_int8_trelu_interval_90"])
    return result


if __name__ == "__main__":
    main()
