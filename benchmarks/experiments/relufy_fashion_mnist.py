"""ReLU-fication of a Hardswish MobileNetV3-style and a SiLU YOLO-style classifier (Fashion-MNIST).

For each model: train the original (Hardswish / SiLU) on a training subset; relufy it
(``sparsify(model, "relufy")``: blend to ReLU over ``ramp_steps``, cross-entropy plus
distillation from the frozen original) and fine-tune for at most 20% of the original's
epochs, recording validation accuracy and activation density at several points; then
``fit_thresholds`` at the highest of ``targets`` whose validation accuracy stays within 1 point
of the original's. Reports test accuracy of original / relufied / thresholded, per-layer
input density as edge_runtime measures it (``run_with_stats``), and batch-1 latency (one
thread, thread CPU time, interleaved blocks via benchmarks/common.py, under
``flock /tmp/heavy.lock``) of edge_runtime (sparsity auto) on the final model against
onnxruntime on the ORIGINAL model (plus onnxruntime and edge_runtime dense on the final one).

Run (one thread; about 10-25 min per model on a shared 2-core host, most of it training)::

    nice -n 10 python3 -m benchmarks.experiments.relufy_fashion_mnist --model yolo
    nice -n 10 python3 -m benchmarks.experiments.relufy_fashion_mnist --model mobilenet_v3

Writes benchmarks/results/experiments_relufy_<model>.json and _<model>.png.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import fcntl
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks import common
from benchmarks.experiments import relufy_train as rt

log = logging.getLogger(__name__)
CHECKPOINTS = Path("/tmp")  # the originals are cached here as relufy_<model>_baseline.pt


@dataclass(frozen=True)
class RelufyConfig:
    """The documented run (defaults); every field is a command-line flag."""

    model: str = "yolo"  # yolo | mobilenet_v3
    train: tuple[int, int] = (0, 10000)  # training images (subset: a 2-core host shared by ~7 jobs)
    val: tuple[int, int] = (50000, 52000)  # held-out training images: fine-tune curve, threshold budget
    calib: tuple[int, int] = (52000, 53000)  # held-out training images: threshold quantiles
    epochs: int = 5  # original: Adam, cosine to 0
    lr: float = 2e-3
    finetune_epochs: float = 1.0  # <= 20% of epochs
    finetune_lr: float = 1e-3  # Adam, cosine to 0
    ramp_steps: int = 40  # blend k: 0 -> 1 over the first half of the fine-tune
    l1_alpha: float = 0.0  # activation L1 on the new activations during the fine-tune (Kurtz et al.)
    activation: str = "relu"  # new activation: relu | fatrelu (thresholds set at threshold_at)
    threshold_at: int = 0  # fatrelu: fine-tune step at which choose_thresholds sets them (0: never)
    threshold_target: float = 0.8  # fatrelu: target sparsity of that calibration
    anneal_target: float = 0.0  # > 0: FATReLU thresholds annealed to this sparsity during the fine-tune
    anneal_steps: int = 30  # steps of that annealing ramp, counted from the end of the blend
    distill_alpha: float = 1.0  # weight of the distillation loss from the frozen original (T = 2)
    tag: str = ""  # suffix of the output files, e.g. "_l1"
    curve_points: int = 5  # fine-tune evaluations (incl. start and end)
    targets: tuple[float, ...] = (0.85, 0.75, 0.65)  # fit_thresholds targets, tried from the highest down
    accuracy_budget: float = 1.0  # points of accuracy loss allowed against the original (chosen on val data)
    seed: int = 0
    finetune_seed: int = -1  # seed of the fine-tune's batch order (-1: seed + 1); repeats a fine-tune of one original
    blocks: int = 21  # timing: interleaved rounds (first one discarded) of `calls` calls
    calls: int = 10
    lock_wait_s: float = 600.0  # wait this long for /tmp/heavy.lock, then time without it (recorded)


def activation_density(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, float]:
    from exporters.sparsity import activation_sparsity

    sp = activation_sparsity(model, list(x.split(500)), names)
    return {n: round(1.0 - v, 4) for n, v in sp.items()}


def finetune(original: nn.Module, data: dict, cfg: RelufyConfig) -> tuple[nn.Module, list[str], list[dict]]:
    """Relufy a copy of ``original`` and fine-tune it; return it, its activation names, the curve."""
    from exporters.sparsity import sparsify

    anneal = {"target_sparsity": cfg.anneal_target, "anneal_steps": cfg.anneal_steps} if cfg.anneal_target else {}
    s = sparsify(copy.deepcopy(original), "relufy", ramp_steps=cfg.ramp_steps, l1_alpha=cfg.l1_alpha,
                 activation=cfg.activation, distill_alpha=cfg.distill_alpha, **anneal)
    names = list(s.activation_names)
    per_epoch = rt.steps_per_epoch(len(data["x_train"]))
    steps = int(round(cfg.finetune_epochs * per_epoch))
    marks = sorted({int(round(i * steps / (cfg.curve_points - 1))) for i in range(cfg.curve_points)})
    curve: list[dict] = []

    def point(step: int) -> None:
        if step in marks:
            dens = activation_density(s.model, data["x_val"], names)
            curve.append({"step": step, "epoch": round(step / per_epoch, 3),
                          "k": min(1.0, step / max(1, cfg.ramp_steps)),
                          "val_accuracy": rt.accuracy(s.model, data["x_val"], data["y_val"]),
                          "mean_density": dens["mean"], "density": dens})
            log.warning("fine-tune step %d: val acc %.2f, mean density %.3f", step, curve[-1]["val_accuracy"],
                        dens["mean"])
            s.model.train()

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return s.loss(nn.functional.cross_entropy(out, y))  # + distillation from the frozen original

    def after(step: int) -> None:
        s.after_step()
        if cfg.threshold_at and step == cfg.threshold_at:  # FATReLU thresholds, then train with them fixed
            from exporters.sparsity import choose_thresholds

            choose_thresholds(s.model, data["x_calib"][:500], cfg.threshold_target)
            s.model.train()
        point(step)

    point(0)
    rt.train_steps(s.model, data["x_train"], data["y_train"], steps, cfg.finetune_lr,
                   cfg.seed + 1 if cfg.finetune_seed < 0 else cfg.finetune_seed, cosine=True,
                   loss_fn=loss_fn, after_step=after)
    return s.finalize().eval(), names, curve


def cached_finetune(original: nn.Module, data: dict,
                    cfg: RelufyConfig) -> tuple[nn.Module, list[str], list[dict], float]:
    """:func:`finetune`, cached in CHECKPOINTS keyed by the config's training and fine-tune fields."""
    path = CHECKPOINTS / f"relufy_{cfg.model}{cfg.tag}_finetuned.pt"
    key = {k: v for k, v in dataclasses.asdict(cfg).items()
           if k not in ("accuracy_budget", "blocks", "calls", "lock_wait_s", "val", "calib", "targets", "tag")}
    new_fields = {"l1_alpha": 0.0, "activation": "relu", "threshold_at": 0, "threshold_target": 0.8,
                  "anneal_target": 0.0, "anneal_steps": 30, "distill_alpha": 1.0, "finetune_seed": -1}
    key = {k: v for k, v in key.items() if k not in new_fields or v != new_fields[k]}  # older cached runs
    key = json.loads(json.dumps(key))
    if path.exists():
        saved = torch.load(path, weights_only=False)
        if saved["key"] == key:
            log.warning("loaded the fine-tuned %s from %s", cfg.model, path)
            return saved["model"].eval(), saved["names"], saved["curve"], saved["seconds"]
    t0 = time.perf_counter()
    relufied, names, curve = finetune(original, data, cfg)
    seconds = time.perf_counter() - t0
    torch.save({"key": key, "model": relufied, "names": names, "curve": curve, "seconds": seconds}, path)
    return relufied, names, curve, seconds


def export_proto(model: nn.Module) -> bytes:
    from exporters.onnx_export import export_onnx, finalize

    return finalize(export_onnx(model.eval(), torch.zeros(1, 1, 28, 28), dynamic_batch=False)).SerializeToString()


def layer_density(proto: bytes, pool: np.ndarray) -> list[dict]:
    """Per Conv/Gemm/MatMul node under sparsity auto: kernel counts and mean input density."""
    from edge_runtime import InferenceSession, SessionOptions

    opts = SessionOptions()
    opts.intra_op_num_threads = 1
    sess = InferenceSession(proto, opts, sparsity="auto")
    name = sess.get_inputs()[0].name
    per: dict[str, dict] = {}
    for x in pool:
        _, stats = sess.run_with_stats(None, {name: x[None]})
        for n in stats.nodes:
            if n.kernel == "plain":
                continue
            d = per.setdefault(n.name, {"node": n.name, "op": n.op_type, "kernels": {}, "density": []})
            d["kernels"][n.kernel] = d["kernels"].get(n.kernel, 0) + 1
            if n.density is not None:
                d["density"].append(n.density)
    return [{**d, "density": round(float(np.mean(d["density"])), 4) if d["density"] else None}
            for d in per.values()]


def _acquire(lock, wait_s: float) -> bool:
    """Take the heavy-job lock, waiting at most ``wait_s``; False (time anyway, recorded) when not got."""
    end = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > end:
                log.warning("/tmp/heavy.lock still busy after %.0f s: timing without it (thread CPU time)", wait_s)
                return False
            time.sleep(5)


def time_models(protos: dict[str, bytes], pool: np.ndarray, cfg: RelufyConfig) -> dict:
    """Interleaved batch-1 thread-CPU timing under /tmp/heavy.lock; ms medians and ratios."""
    import onnxruntime as ort
    from edge_runtime import InferenceSession, SessionOptions

    opts = SessionOptions()
    opts.intra_op_num_threads = 1
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sessions = {"edge_auto_final": InferenceSession(protos["final"], opts, sparsity="auto"),
                "edge_dense_final": InferenceSession(protos["final"], opts, sparsity="off"),
                "ort_final": ort.InferenceSession(protos["final"], so, providers=["CPUExecutionProvider"]),
                "ort_original": ort.InferenceSession(protos["original"], so, providers=["CPUExecutionProvider"])}
    feeds = [x[None] for x in pool]
    edge = sessions["edge_auto_final"]
    edge.finish_line_check([{edge.get_inputs()[0].name: x} for x in feeds])  # a small gain is checked first
    fns = {k: (lambda x, s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
    with open("/tmp/heavy.lock", "a") as lock:
        held = _acquire(lock, cfg.lock_wait_s)  # the same lock as `flock /tmp/heavy.lock`
        try:
            times = common.interleave(fns, feeds, cfg.blocks, cfg.calls, clock=time.thread_time)
        finally:
            if held:
                fcntl.flock(lock, fcntl.LOCK_UN)
    out = {"ms": {k: round(common.median_ms(v), 4) for k, v in times.items()}, "heavy_lock_held": held}
    out["speedup_vs_ort_original"] = round(1.0 / common.ratio(times["edge_auto_final"], times["ort_original"]), 3)
    out["speedup_vs_ort_final"] = round(1.0 / common.ratio(times["edge_auto_final"], times["ort_final"]), 3)
    lo, hi = common.ratio_interval(times["edge_auto_final"], times["ort_original"])
    out["speedup_vs_ort_original_90ci"] = [round(1.0 / hi, 3), round(1.0 / lo, 3)]
    return out


def thresholds(model: nn.Module, data: dict, val_original: float, cfg: RelufyConfig) -> tuple[Any, list[dict]]:
    """Try ``cfg.targets`` from the highest down (thresholds from calibration, no back-off: a
    back-off search costs one evaluation per layer per round, too slow on this host); keep the
    first whose validation accuracy is within ``accuracy_budget`` of the original's."""
    from exporters.thresholds import fit_thresholds

    rows, chosen = [], None
    for target in sorted(cfg.targets, reverse=True):
        fit = fit_thresholds(model, data["x_calib"], target_sparsity=target, max_accuracy_drop=100.0,
                             eval_data=(data["x_val"], data["y_val"]))
        drop = val_original - fit.metric_after
        rows.append({"target": target, "val_accuracy": fit.metric_after, "val_drop_vs_original": round(drop, 3),
                     "mean_sparsity_calib": round(fit.mean_sparsity, 4), "sparsity": fit.sparsity,
                     "thresholds": fit.thresholds, "shortfall_line": fit.shortfall_line()})
        log.warning("target %.2f: val acc %.2f (drop %.2f), mean sparsity %.3f", target, fit.metric_after, drop,
                    fit.mean_sparsity)
        if drop <= cfg.accuracy_budget:
            chosen = fit
            break
    return chosen, rows


def run(cfg: RelufyConfig) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    data = rt.load(cfg.train, cfg.val, cfg.calib)
    original, train_s, original_curve = rt.train_baseline(cfg.model, data, cfg.epochs, cfg.lr, cfg.seed,
                                          CHECKPOINTS / f"relufy_{cfg.model}_baseline.pt")
    relufied, names, curve, finetune_s = cached_finetune(original, data, cfg)
    acc = {"original": rt.accuracy(original, data["x_test"], data["y_test"]),
           "relufied": rt.accuracy(relufied, data["x_test"], data["y_test"])}
    val_orig = rt.accuracy(original, data["x_val"], data["y_val"])
    # annealed thresholds are the final ones (an empty --targets list skips the post-hoc ladder)
    fit, ladder = thresholds(relufied, data, val_orig, cfg) if cfg.targets else (None, [])
    final = fit.model.eval() if fit is not None else relufied  # no target within budget: ReLU zeros only
    acc["final"] = rt.accuracy(final, data["x_test"], data["y_test"])
    protos = {"original": export_proto(original), "relufied": export_proto(relufied), "final": export_proto(final)}
    layers = {k: layer_density(protos[k], data["pool"]) for k in ("original", "relufied", "final")}
    sparse_in = [1 - d["density"] for d in layers["final"] if d["kernels"].get("sparse") and d["density"] is not None]
    fed = [1 - d["density"] for d in layers["final"] if d["density"] is not None]
    timing = time_models(protos, data["pool"], cfg)
    return {
        "config": dataclasses.asdict(cfg), "train_seconds": round(train_s, 1), "finetune_seconds": round(finetune_s, 1),
        "test_accuracy": acc, "accuracy_drop_final": round(acc["original"] - acc["final"], 3),
        "val_accuracy_original": val_orig, "original_curve": original_curve, "relufied_activations": names,
        "finetune_curve": curve,
        "thresholds": {"chosen_target": fit.target_sparsity if fit is not None else None, "ladder": ladder},
        "final_activation_sparsity_test": {n: round(1 - v, 4) for n, v in activation_density(
            final, data["x_test"][:2000], list(fit.sparsity) if fit is not None else names).items()},
        "edge_layers": layers,
        "mean_sparsity_sparse_layers": round(float(np.mean(sparse_in)), 4) if sparse_in else None,
        "sparse_layers": len(sparse_in), "dispatched_layers": len(fed),
        "mean_sparsity_dispatched_layers": round(float(np.mean(fed)), 4) if fed else None,
        "timing": timing, "blas": common.blas_info(), "machine": common.machine_info(), "torch": torch.__version__,
    }


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = doc["finetune_curve"]
    ep = [p["epoch"] for p in c]
    orig = doc.get("original_curve") or []  # the original's training, when it was recorded
    fig, axes = plt.subplots(1, 3 if orig else 2, figsize=(13.5 if orig else 9, 3.5))
    a, b = axes[-2], axes[-1]
    if orig:
        axes[0].plot([p["epoch"] for p in orig], [p["val_accuracy"] for p in orig], "o-", color="gray")
        axes[0].set_xlabel("training epochs (original model)")
        axes[0].set_ylabel("validation accuracy (%)")
        axes[0].set_title("original: converged?", fontsize=10)
    a.plot(ep, [p["mean_density"] for p in c], "o-")
    a.set_xlabel("fine-tune epochs")
    a.set_ylabel("mean activation density (val)")
    a.set_ylim(0, 1.05)
    b.plot(ep, [p["val_accuracy"] for p in c], "o-", label="relufied")
    b.axhline(doc["val_accuracy_original"], color="gray", ls="--", label="original")
    b.set_xlabel("fine-tune epochs")
    b.set_ylabel("validation accuracy (%)")
    b.legend()
    fig.suptitle(f"relufy {doc['config']['model']} (blend over {doc['config']['ramp_steps']} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(RelufyConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("int", "float", "str"):
            parser.add_argument(flag, type=eval(f.type), default=f.default)  # noqa: S307
        elif f.type == "tuple[int, int]":  # an image index range [start, end)
            parser.add_argument(flag, type=int, nargs=2, default=list(f.default), metavar=("START", "END"))
        elif f.type == "tuple[float, ...]":
            parser.add_argument(flag, type=float, nargs="*", default=list(f.default))
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    cfg = RelufyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(a).items() if k != "out_dir"})
    doc = run(cfg)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / f"experiments_relufy_{cfg.model}{cfg.tag}.json").write_text(json.dumps(doc, indent=2))
    plot(doc, a.out_dir / f"experiments_relufy_{cfg.model}{cfg.tag}.png")
    t, acc = doc["timing"], doc["test_accuracy"]
    print(f"{cfg.model}: test acc original {acc['original']:.2f} relufied {acc['relufied']:.2f} "
          f"final {acc['final']:.2f} (drop {doc['accuracy_drop_final']:.2f}); mean sparsity at sparse-run "
          f"layers {doc['mean_sparsity_sparse_layers']} ({doc['sparse_layers']} layers), at all dispatched "
          f"layers {doc['mean_sparsity_dispatched_layers']} ({doc['dispatched_layers']}); ms edge auto "
          f"{t['ms']['edge_auto_final']:.3f} vs ort original {t['ms']['ort_original']:.3f}: "
          f"{t['speedup_vs_ort_original']:.2f}x")
    for row in doc["thresholds"]["ladder"]:
        print(f"  threshold target {row['target']}: val acc {row['val_accuracy']:.2f} "
              f"(drop {row['val_drop_vs_original']:.2f}), mean sparsity {row['mean_sparsity_calib']:.3f}")
    return doc


if __name__ == "__main__":
    main()
