"""Training-free thresholds on a small ReLU CNN (Fashion-MNIST): accuracy, sparsity, latency.

A 3-conv ReLU CNN is trained briefly; then :func:`exporters.thresholds.fit_thresholds`
runs at each target sparsity (0.7, 0.8, 0.9, 0.95; back-off budget 1 accuracy point on a
validation split of the training set). For every setting (and the unthresholded
baseline) the script reports test accuracy on the 10k test images, the sparsity of the
activations that feed a conv (fraction of zeros of the activation output over all test
pixels x channels, averaged), each layer's input density as edge_runtime measures it,
and batch-1 latency of edge_runtime (sparsity="auto"), edge_runtime (sparsity="off")
and onnxruntime, one thread each, interleaved in blocks (A B C A B C ...), each call on a
different input from a pool of 32 test images, medians (docs/references.md §2). It picks
the setting with >= 85% mean conv-feeding sparsity and <= 1 point accuracy loss.

Run (about 10 min wall on the shared 2-core host)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 -m benchmarks.experiments.cnn_fatrelu

Writes benchmarks/results/experiments_cnn_fatrelu.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.experiments import fashion_mnist as fm

log = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass(frozen=True)
class CNNConfig:
    """Training, threshold-fitting and timing budget."""

    epochs: int = 2
    train_subset: int = 20000  # first N training images for training
    val: tuple[int, int] = (50000, 52000)  # training images used as the back-off's labelled eval set
    calib: tuple[int, int] = (52000, 53000)  # training images used for the quantiles
    targets: tuple[float, ...] = (0.7, 0.8, 0.9, 0.95)
    max_accuracy_drop: float = 1.0  # back-off budget (points, on the validation split)
    lr: float = 2e-3  # Adam, batch 128
    seed: int = 0
    blocks: int = 15  # timing: interleaved blocks per contender
    calls_per_block: int = 10
    select_sparsity: float = 0.85  # selection rule: mean conv-feeding sparsity >= this ...
    select_max_loss: float = 1.0  # ... and test accuracy loss <= this many points


def make_cnn() -> nn.Sequential:
    """Conv-BN-ReLU x3 (16, 32, 64 channels; two max-pools) -> Linear 128 -> ReLU -> 10."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def train(cfg: CNNConfig, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(cfg.seed)
    model = make_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            idx = order[i:i + 128]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.warning("epoch %d done (last loss %.3f)", epoch + 1, float(loss.detach()))
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pred = torch.cat([model(b).argmax(1) for b in x.split(1000)])
    return 100.0 * float((pred == y).float().mean())


def export_proto(model: nn.Module) -> bytes:
    from exporters.onnx_export import export_onnx, finalize

    return finalize(export_onnx(model, torch.zeros(1, 1, 28, 28), dynamic_batch=False)).SerializeToString()


def time_sessions(proto: bytes, pool: np.ndarray, cfg: CNNConfig) -> tuple[dict, dict]:
    """Median batch-1 latency (ms) per contender, interleaved; plus edge's per-node densities."""
    import onnxruntime as ort
    from edge_runtime import InferenceSession, SessionOptions

    opts = SessionOptions()
    opts.intra_op_num_threads = 1
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sessions = {"edge_auto": InferenceSession(proto, opts, sparsity="auto"),
                "edge_dense": InferenceSession(proto, opts, sparsity="off"),
                "onnxruntime": ort.InferenceSession(proto, so, providers=["CPUExecutionProvider"])}
    name = sessions["onnxruntime"].get_inputs()[0].name
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for block in range(cfg.blocks + 1):  # block 0 = warm-up, discarded
        for key, sess in sessions.items():
            for i in range(cfg.calls_per_block):
                x = pool[(block * cfg.calls_per_block + i) % len(pool)][None]
                t0 = time.perf_counter()
                sess.run(None, {name: x})
                if block:
                    times[key].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    dens: dict[str, list[float]] = {}
    for x in pool[:16]:
        _, stats = sessions["edge_auto"].run_with_stats(None, {name: x[None]})
        for n in stats.nodes:
            if n.density is not None:
                dens.setdefault(f"{n.name} ({n.kernel})", []).append(n.density)
    return med, {k: round(float(np.mean(v)), 4) for k, v in dens.items()}


def conv_fed(consumers: dict[str, list[str]], model: nn.Module) -> list[str]:
    mods = dict(model.named_modules())
    return [a for a, cons in consumers.items() if any(isinstance(mods[c], nn.Conv2d) for c in cons)]


def evaluate_setting(label: str, model: nn.Module, names: list[str], data: dict, cfg: CNNConfig) -> dict:
    """Test accuracy, conv-feeding sparsity on the test set, latency and edge densities."""
    from exporters.sparsity import activation_sparsity

    sp = activation_sparsity(model, list(data["x_test"].split(1000)), names)
    mean = float(np.mean([sp[n] for n in names]))
    lat, dens = time_sessions(export_proto(model), data["pool"], cfg)
    row = {"setting": label, "test_accuracy": accuracy(model, data["x_test"], data["y_test"]),
           "conv_fed_sparsity": {n: round(sp[n], 4) for n in names}, "mean_conv_fed_sparsity": mean,
           "latency_ms": lat, "speedup_auto_vs_ort": lat["onnxruntime"] / lat["edge_auto"],
           "speedup_auto_vs_dense": lat["edge_dense"] / lat["edge_auto"], "edge_input_density": dens}
    log.warning("%s: acc %.2f, conv-fed sparsity %.3f, ms auto %.2f dense %.2f ort %.2f", label,
                row["test_accuracy"], mean, lat["edge_auto"], lat["edge_dense"], lat["onnxruntime"])
    return row


def load(cfg: CNNConfig) -> dict:
    xtr, ytr = fm.load_split("train")
    xte, yte = fm.load_split("test")
    t = lambda a: torch.from_numpy(fm.normalized(a))  # noqa: E731
    (v0, v1), (c0, c1) = cfg.val, cfg.calib
    return {"x_train": t(xtr[:cfg.train_subset]), "y_train": torch.from_numpy(ytr[:cfg.train_subset]),
            "x_val": t(xtr[v0:v1]), "y_val": torch.from_numpy(ytr[v0:v1]), "x_calib": t(xtr[c0:c1]),
            "x_test": t(xte), "y_test": torch.from_numpy(yte), "pool": fm.normalized(xte[:32])}


def select(rows: list[dict], base_acc: float, cfg: CNNConfig) -> dict | None:
    """The sparsest setting meeting the rule, or None."""
    ok = [r for r in rows[1:] if r["mean_conv_fed_sparsity"] >= cfg.select_sparsity
          and base_acc - r["test_accuracy"] <= cfg.select_max_loss]
    return max(ok, key=lambda r: r["mean_conv_fed_sparsity"]) if ok else None


def run(cfg: CNNConfig) -> dict:
    from exporters.thresholds import fit_thresholds

    torch.set_num_threads(1)
    data = load(cfg)
    t0 = time.perf_counter()
    model = train(cfg, data["x_train"], data["y_train"])
    train_s = time.perf_counter() - t0
    from exporters.thresholds import find_fed_activations

    names = conv_fed(find_fed_activations(model, data["x_calib"][:2]), model)
    rows = [evaluate_setting("baseline (ReLU)", model, names, data, cfg)]
    fits = []
    for target in cfg.targets:
        res = fit_thresholds(model, data["x_calib"], target_sparsity=target,
                             max_accuracy_drop=cfg.max_accuracy_drop, eval_data=(data["x_val"], data["y_val"]))
        fits.append({"target": target, "thresholds": res.thresholds, "targets_after_backoff": res.targets,
                     "calib_sparsity": res.sparsity, "val_accuracy_before": res.metric_before,
                     "val_accuracy_after": res.metric_after, "backoffs": res.backoffs})
        rows.append(evaluate_setting(f"target {target}", res.model, names, data, cfg))
    chosen = select(rows, rows[0]["test_accuracy"], cfg)
    return {"config": dataclasses.asdict(cfg), "train_seconds": round(train_s, 1),
            "conv_fed_activations": names, "rows": rows, "fits": fits,
            "selected": chosen["setting"] if chosen else None,
            "selection_rule": f">= {cfg.select_sparsity} mean conv-fed sparsity and <= {cfg.select_max_loss} "
                              "point test accuracy loss; the sparsest such setting",
            "blas": _blas_info(), "torch": torch.__version__}


def _blas_info() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    return [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info()]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=CNNConfig.epochs)
    parser.add_argument("--train-subset", type=int, default=CNNConfig.train_subset)
    parser.add_argument("--blocks", type=int, default=CNNConfig.blocks)
    parser.add_argument("--out", type=Path, default=RESULTS / "experiments_cnn_fatrelu.json")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    doc = run(CNNConfig(epochs=a.epochs, train_subset=a.train_subset, blocks=a.blocks))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2))
    for r in doc["rows"]:
        print(f"{r['setting']:>16}: acc {r['test_accuracy']:.2f}  conv-fed sparsity {r['mean_conv_fed_sparsity']:.3f}"
              f"  ms auto/dense/ort {r['latency_ms']['edge_auto']:.2f}/{r['latency_ms']['edge_dense']:.2f}/"
              f"{r['latency_ms']['onnxruntime']:.2f}")
    print("selected:", doc["selected"])
    return doc


if __name__ == "__main__":
    main()
