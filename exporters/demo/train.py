"""Train the demo inspection models on the synthetic data (CPU, minutes), sparsely.

The CNN trains with the ``"fatrelu"`` recipe (activation L1 on every Conv-BN-ReLU and
the head MLP), the ViT with ``"peng-scratch"`` (zeroth bias, restricted LayerNorm,
J-SquaredReLU in each MLP); see exporters/sparsity. This module's ``main`` produced the
shipped checkpoints (docs/demo_data.md has the exact commands and results)::

    python -m exporters.demo.train --model cnn --out exporters/demo/assets

The segmenter (``assets/unet.pt``) is trained by :mod:`exporters.demo.train_segmenter`,
which reuses :func:`fit` and :func:`predict_with_density`.

Example:
    >>> from exporters.demo.dataset import DemoDataConfig
    >>> model, metrics = train("cnn", DemoDataConfig(n_train=64, n_test=32), epochs=1, progress=False)
    >>> 0.0 <= metrics["test_accuracy"] <= 1.0
    True
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from exporters.demo.dataset import DemoDataConfig, load_splits, make_split, to_tensor
from exporters.demo.models import CLASSIFIERS, DEFAULT_RECIPES, apply_recipe, build_model
from exporters.sparsity import choose_thresholds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings for :func:`train` (defaults: the shipped models' schedule)."""

    batch_size: int = 64  # small batches: more steps per epoch on a small data set
    lr: float = 3e-3  # AdamW peak learning rate of the one-cycle schedule
    weight_decay: float = 0.02  # AdamW decoupled weight decay
    warmup: float = 0.15  # fraction of the steps spent warming up (one-cycle pct_start)
    l1_alpha: float | None = None  # activation L1 for "fatrelu"; None = the recipe's default
    fatrelu_target: float | None = 0.7  # "fatrelu": calibrate thresholds to this sparsity after training
    finetune_epochs: int = 2  # "fatrelu": epochs at lr/10 after the calibration; 0 = none
    threads: int | None = None  # torch intra-op threads; None = torch's default
    seed: int = 0  # weight init and batch order


def _resolve_recipe(name: str, recipe: str | None) -> str | None:
    """None -> the model's default recipe; "none" -> plain training."""
    if recipe is None:
        return DEFAULT_RECIPES[name]
    return None if recipe == "none" else recipe


def _augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random rot90/flip of the whole batch (defects have no preferred orientation)."""
    k = int(torch.randint(4, (1,), generator=gen))
    xb = torch.rot90(xb, k, dims=(2, 3))
    return xb.flip(3) if bool(torch.randint(2, (1,), generator=gen)) else xb


@torch.no_grad()
def predict_with_density(model: nn.Module, x: torch.Tensor, batch_size: int = 256
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Argmax over axis 1 of ``model``'s outputs on ``x`` (eval mode), and per-layer input density.

    Density of a layer = mean fraction of nonzero entries of its input over the data;
    layers are those named by ``model.sparse_input_layers()`` (inputs after a ReLU).

    Returns:
        (predictions: (N,) classes, or (N, H, W) for a segmenter; {layer: density}).
    """
    names = model.sparse_input_layers() if hasattr(model, "sparse_input_layers") else []
    nonzero = {n: 0 for n in names}
    total = {n: 0 for n in names}

    def hook_for(name: str):
        def hook(_m: nn.Module, args: tuple) -> None:
            nonzero[name] += int(torch.count_nonzero(args[0]))
            total[name] += args[0].numel()
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(hook_for(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        pred = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return pred, {n: nonzero[n] / max(total[n], 1) for n in names}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict[str, Any]:
    """Accuracy, defect recall and per-layer input density (:func:`predict_with_density`) on normalised ``x``.

    Returns:
        ``{"test_accuracy", "defect_recall", "ok_recall", "density": {layer: d},
        "mean_density", "predictions"}``.
    """
    pred, density = predict_with_density(model, x, batch_size)
    defect = y == 1
    return {
        "test_accuracy": float((pred == y).float().mean()),
        "defect_recall": float((pred[defect] == 1).float().mean()) if defect.any() else float("nan"),
        "ok_recall": float((pred[~defect] == 0).float().mean()) if (~defect).any() else float("nan"),
        "density": density,
        "mean_density": float(np.mean(list(density.values()))) if density else float("nan"),
        "predictions": pred,
    }


def _per_type_recall(pred: torch.Tensor, types: np.ndarray) -> dict[str, float]:
    p = pred.numpy()
    out = {}
    for t in sorted(set(types.tolist())):
        m = types == t
        want = 0 if t == "none" else 1
        out[t] = float((p[m] == want).mean())
    return out


def _classification_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return nn.functional.cross_entropy(model(_augment(xb, gen)), yb)


def _classification_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    probe = evaluate(model, x[:500], y[:500])
    return f"test accuracy {probe['test_accuracy']:.4f} (first 500), mean density {probe['mean_density']:.3f}"


def fit(model: nn.Module, handle: Any, train_xy: tuple, test_xy: tuple, epochs: int, lr: float,
        tc: TrainConfig, progress: bool, desc: str, batch_loss: Callable[..., torch.Tensor] = _classification_loss,
        probe: Callable[[nn.Module, torch.Tensor, torch.Tensor], str] = _classification_probe) -> None:
    """AdamW + one-cycle over ``epochs``; sparsity loss and constraints via ``handle``.

    Args:
        batch_loss: ``(model, x batch, y batch, generator) -> loss`` (augmentation included);
            default: cross-entropy of the classifier on a rot90/flip of the batch.
        probe: ``(model, x_test, y_test) -> text`` logged after each epoch when ``progress`` is off.
    """
    (xtr, ytr), (xte, yte) = train_xy, test_xy
    steps_per_epoch = max(1, math.ceil(len(xtr) / tc.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=tc.warmup)
    gen = torch.Generator().manual_seed(tc.seed)
    bar = _progress(epochs * steps_per_epoch, desc, progress)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * tc.batch_size:(i + 1) * tc.batch_size]
            loss = batch_loss(model, xtr[idx], ytr[idx], gen)
            if handle is not None:
                loss = handle.loss(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if handle is not None:
                handle.after_step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        if not progress:
            log.info("%s epoch %d/%d: loss %.4f, %s", desc, epoch + 1, epochs, float(loss.detach()),
                     probe(model, xte, yte))
    bar.close()
    model.train()


def train(name: str, config: DemoDataConfig, *, epochs: int, recipe: str | None = None,
          progress: bool = True, train_config: TrainConfig = TrainConfig(),
          cache_dir: str | None = None, use_cache: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Train demo model ``name`` on ``config``'s data and evaluate it on the test split.

    Args:
        name: "cnn" or "vit".
        config: the data (sizes, seed); the model's input size follows ``config.size``.
        epochs: passes over the training split.
        recipe: sparsity recipe; None = the model's default (cnn: "fatrelu", vit:
            "peng-scratch"), "none" = plain training.
        progress: show a tqdm progress bar (stderr).
        train_config: optimiser settings.
        cache_dir / use_cache: where :func:`load_splits` caches the data; no cache when False.

    Returns:
        ``(model in eval mode, metrics)``; metrics hold test accuracy, defect recall,
        per-defect-type recall, per-layer input density, mean density, training seconds.

    Raises:
        KeyError: unknown model. ValueError: ``epochs < 1``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    tc = train_config
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    recipe = _resolve_recipe(name, recipe)
    kwargs = {"image": config.size} if name == "vit" else {}
    model = build_model(name, **kwargs)
    overrides = {"l1_alpha": tc.l1_alpha} if (recipe == "fatrelu" and tc.l1_alpha is not None) else {}
    handle = apply_recipe(model, recipe, **overrides)

    t0 = time.perf_counter()
    if use_cache:
        splits = load_splits(config, cache_dir)
    else:
        splits = {s: make_split(config, s) for s in ("train", "test")}
    xtr, ytr = to_tensor(splits["train"][0]), torch.as_tensor(splits["train"][1])
    xte, yte = to_tensor(splits["test"][0]), torch.as_tensor(splits["test"][1])
    data_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    fit(model, handle, (xtr, ytr), (xte, yte), epochs, tc.lr, tc, progress, f"train {name}")
    if recipe == "fatrelu" and tc.fatrelu_target is not None:
        chosen = choose_thresholds(model, xtr[:512], tc.fatrelu_target)
        log.info("FATReLU thresholds for sparsity %.2f: %s", tc.fatrelu_target,
                 {k: round(float(v), 4) for k, v in chosen.items()})
        if tc.finetune_epochs:
            fit(model, handle, (xtr, ytr), (xte, yte), tc.finetune_epochs, tc.lr * 0.1, tc, progress,
                f"fine-tune {name}")
    train_s = time.perf_counter() - t1
    if handle is not None:
        handle.remove_hooks()
    model.eval()
    metrics = evaluate(model, xte, yte)
    metrics["per_type_recall"] = _per_type_recall(metrics.pop("predictions"), splits["test"][2]["defect_type"])
    metrics.update(train_seconds=train_s, data_seconds=data_s, epochs=epochs, recipe=recipe,
                   fatrelu_target=tc.fatrelu_target if recipe == "fatrelu" else None,
                   finetune_epochs=tc.finetune_epochs if recipe == "fatrelu" else 0,
                   n_train=len(xtr), n_test=len(xte))
    log.info("trained %s: accuracy %.4f, defect recall %.4f, mean density %.3f in %.0f s",
             name, metrics["test_accuracy"], metrics["defect_recall"], metrics["mean_density"], train_s)
    return model, metrics


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="step", leave=False)


def save_checkpoint(model: nn.Module, name: str, metrics: dict[str, Any], config: DemoDataConfig,
                    path: str | Path, command: str = "") -> Path:
    """Write the checkpoint dict ``load_pretrained`` reads (state_dict + how it was made)."""
    kwargs = {"image": config.size} if name == "vit" else {}
    recipe = metrics.get("recipe")
    ckpt = {
        "name": name, "model_kwargs": kwargs, "recipe": recipe, "recipe_overrides": {},
        "data_config": dataclasses.asdict(config) | {"defect_types": list(config.defect_types),
                                                    "backgrounds": list(config.backgrounds)},
        "metrics": {k: v for k, v in metrics.items() if k != "recipe"}, "command": command,
        "torch_version": str(torch.__version__),
        "state_dict": {k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                       for k, v in model.state_dict().items()},  # LayerNorm schedules keep extra state
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path


SHORT = {"n_train": 1200, "n_test": 400, "epochs": 3}  # the demo's --train: well under a minute of training


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m exporters.demo.train --model cnn|vit --out DIR [--epochs N] [--short]``."""
    p = argparse.ArgumentParser(prog="python -m exporters.demo.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=CLASSIFIERS, required=True)
    p.add_argument("--out", required=True, help="directory for <model>.pt")
    p.add_argument("--epochs", type=int, default=None, help="default: 12 (cnn) / 16 (vit), as shipped; 3 with --short")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 4000)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument("--recipe", default=None, help="sparsity recipe; 'none' for plain training")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--l1-alpha", type=float, default=None, help="activation L1 weight (fatrelu)")
    p.add_argument("--short", action="store_true", help=f"quick schedule {SHORT}")
    p.add_argument("--fatrelu-target", type=float, default=0.7, help="FATReLU calibration sparsity (cnn)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="epochs after calibration (default 2; 1 with --short)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = SHORT if a.short else {"n_train": 4000, "n_test": 1000, "epochs": 12 if a.model == "cnn" else 16}
    cfg = DemoDataConfig(seed=a.seed, n_train=a.n_train or base["n_train"], n_test=a.n_test or base["n_test"])
    ft = a.finetune_epochs if a.finetune_epochs is not None else (1 if a.short else 2)
    tc = TrainConfig(l1_alpha=a.l1_alpha, threads=a.threads, fatrelu_target=a.fatrelu_target, finetune_epochs=ft, **({"lr": a.lr} if a.lr else {}))
    model, metrics = train(a.model, cfg, epochs=a.epochs or base["epochs"], recipe=a.recipe,
                           progress=not a.no_progress, train_config=tc)
    command = "python -m exporters.demo.train " + " ".join(sys.argv[1:] if argv is None else argv)
    path = save_checkpoint(model, a.model, metrics, cfg, Path(a.out) / f"{a.model}.pt", command)
    sys.stdout.write(json.dumps({"checkpoint": str(path), **metrics}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
