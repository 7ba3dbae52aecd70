"""Small ReLU ViT on Fashion-MNIST: vanilla vs ``sparsify(model, "peng-scratch")``.

Both variants start from the same seed (same initial weights, same batch order) and get
the same budget (epochs x training images). After every epoch each records test accuracy
and the density (fraction of nonzeros) of every MLP hidden activation over all test
tokens x hidden units, per layer and averaged: Peng et al.'s measure (docs/references.md
§1), taken with :func:`exporters.sparsity.activation_sparsity` (density = 1 - sparsity).
The two variants train in two processes, one torch thread each.

Run (about 25 min wall on the shared 2-core host with the default budget)::

    python3 -m benchmarks.experiments.vit_fashion_mnist --epochs 8 --train-subset 30000

Writes benchmarks/results/experiments_vit.json and experiments_vit_density.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
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
class ViTConfig:
    """Model and training budget (shared by both variants)."""

    patch: int = 7  # 28/7 = 4x4 = 16 patches + 1 class token = 17 tokens
    dim: int = 64  # token width (task limit: <= 128)
    depth: int = 4  # transformer blocks (task range: 2-4)
    heads: int = 4
    mlp_ratio: int = 4  # MLP hidden = 256 ReLU units per token
    epochs: int = 8
    train_subset: int = 30000  # first N training images (class-balanced enough: labels shuffled in the files)
    batch: int = 128
    lr: float = 1e-3  # AdamW, cosine decay to 0 over the run, 1 epoch linear warm-up
    weight_decay: float = 0.05
    seed: int = 0
    eval_subset: int = 10000  # test images for accuracy and density (the whole test split)
    time_limit_s: float = 720.0  # per variant: stop after the epoch that crosses 12 minutes

    @property
    def tokens(self) -> int:
        return (28 // self.patch) ** 2 + 1


class Block(nn.Module):
    """Pre-norm block; registration order norm2, fc1, act, fc2 so ``sparsify`` finds the MLP."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1)  # (B, H, T, T)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))  # (B, T, C)


class ViT(nn.Module):
    """Patch embedding (Conv stride=patch), class token, learned positions, ReLU MLPs."""

    def __init__(self, cfg: ViTConfig, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, cfg.dim, cfg.patch, cfg.patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dim * cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, C)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos  # (B, T, C)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0]))


def build(cfg: ViTConfig, variant: str) -> tuple[nn.Module, object | None, list[str]]:
    """Model, Sparsified handle (None for vanilla) and the MLP activation names."""
    torch.manual_seed(cfg.seed)
    model = ViT(cfg)
    names = [f"blocks.{i}.act" for i in range(cfg.depth)]
    if variant == "vanilla":
        return model, None, names
    from exporters.sparsity import sparsify

    s = sparsify(model, "peng-scratch", tokens=cfg.tokens)
    if s.activation_names != names:
        raise RuntimeError(f"sparsify found {s.activation_names}, expected {names}")
    return s.model, s, names


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> dict:
    """Test accuracy (%) and per-layer MLP hidden density over all tokens x units."""
    from exporters.sparsity import activation_sparsity

    model.eval()
    batches = [x[i:i + 500] for i in range(0, len(x), 500)]
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in batches])
    sp = activation_sparsity(model, batches, names)
    dens = {n: 1.0 - sp[n] for n in names}
    return {"accuracy": 100.0 * float((pred == y).float().mean()), "density": dens,
            "mean_density": float(np.mean(list(dens.values())))}


def train_variant(cfg: ViTConfig, variant: str) -> dict:
    """Train one variant for the budget; return its per-epoch record."""
    return train_model(cfg, variant)[1]


def train_model(cfg: ViTConfig, variant: str) -> tuple[nn.Module, dict]:
    """Train one variant for the budget; return the trained model and its per-epoch record."""
    torch.set_num_threads(1)
    xtr, ytr = fm.load_split("train")
    xte, yte = fm.load_split("test")
    xtr = torch.from_numpy(fm.normalized(xtr[: cfg.train_subset]))
    ytr = torch.from_numpy(ytr[: cfg.train_subset])
    xte = torch.from_numpy(fm.normalized(xte[: cfg.eval_subset]))
    yte = torch.from_numpy(yte[: cfg.eval_subset])
    model, handle, names = build(cfg, variant)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    steps_per_epoch = (len(xtr) + cfg.batch - 1) // cfg.batch
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps_per_epoch)
                                              * 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(cfg.seed)
    record = {"variant": variant, "epochs": [], "init": evaluate(model, xte, yte, names)}
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch:(i + 1) * cfg.batch]
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if handle is not None:
                handle.after_step()
            loss_sum += float(loss.detach())
        ev = evaluate(model, xte, yte, names)
        ev.update(epoch=epoch, train_loss=loss_sum / steps_per_epoch,
                  wall_s=round(time.perf_counter() - start, 1))
        record["epochs"].append(ev)
        log.warning("%s epoch %d: acc %.2f mean density %.4f (%.0f s)", variant, epoch,
                    ev["accuracy"], ev["mean_density"], ev["wall_s"])
        if time.perf_counter() - start > cfg.time_limit_s:
            log.warning("%s: time limit %.0f s reached after epoch %d", variant, cfg.time_limit_s, epoch)
            break
    return model, record


def summarize(runs: dict[str, dict]) -> dict:
    """Compare the variants at the last epoch both completed (same budget)."""
    n = min(len(runs["vanilla"]["epochs"]), len(runs["peng-scratch"]["epochs"]))
    v, p = runs["vanilla"]["epochs"][n - 1], runs["peng-scratch"]["epochs"][n - 1]
    rel = (v["mean_density"] - p["mean_density"]) / v["mean_density"]
    drop = v["accuracy"] - p["accuracy"]
    return {"compared_epoch": n, "vanilla_accuracy": v["accuracy"], "peng_accuracy": p["accuracy"],
            "accuracy_drop_points": drop, "vanilla_mean_density": v["mean_density"],
            "peng_mean_density": p["mean_density"], "relative_density_reduction": rel,
            "target_met": bool(rel >= 0.30 and drop <= 0.5),
            "target": ">= 30% lower relative density at <= 0.5 point accuracy loss"}


def plot(runs: dict[str, dict], path: Path) -> None:
    """Mean MLP hidden density and test accuracy vs epoch for both variants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, run in runs.items():
        ep = [0] + [e["epoch"] for e in run["epochs"]]
        ax1.plot(ep, [run["init"]["mean_density"]] + [e["mean_density"] for e in run["epochs"]], "o-", label=name)
        ax2.plot(ep[1:], [e["accuracy"] for e in run["epochs"]], "o-", label=name)
    ax1.set(xlabel="epoch", ylabel="mean MLP hidden density (nonzero fraction)", title="density (lower = sparser)")
    ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _worker(args: tuple[ViTConfig, str]) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    return train_variant(*args)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(ViTConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    parser.add_argument("--out", type=Path, default=RESULTS / "experiments_vit.json")
    parser.add_argument("--sequential", action="store_true", help="train the variants one after the other")
    ns = vars(parser.parse_args(argv))
    out, sequential = ns.pop("out"), ns.pop("sequential")
    cfg = ViTConfig(**ns)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    jobs = [(cfg, "vanilla"), (cfg, "peng-scratch")]
    if sequential:
        results = [_worker(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(2) as pool:
            results = pool.map(_worker, jobs)
    runs = {r["variant"]: r for r in results}
    doc = {"config": dataclasses.asdict(cfg), "tokens": cfg.tokens, "torch": torch.__version__,
           "measure": "density = fraction of nonzeros of each MLP ReLU/JSReLU output over all test tokens x "
                      "hidden units; mean = unweighted mean over layers",
           "runs": runs, "summary": summarize(runs)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    plot(runs, out.with_name(out.stem + "_density.png"))
    print(json.dumps(doc["summary"], indent=2))
    return doc


if __name__ == "__main__":
    main()
