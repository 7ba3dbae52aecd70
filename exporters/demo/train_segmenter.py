"""Train the demo's defect segmenter (:class:`~exporters.demo.models.InspectionUNet`) on the drawn masks.

The ground truth is the data generator's mask (``meta["mask"]``, any defect class -> 1), so
the U-Net learns *where* the scratch, crack, pit or stain is. Loss: pixel cross-entropy
(defect pixels weighted :attr:`SegTrainConfig.defect_weight`: they are ~3 % of the pixels)
plus a soft Dice loss on the defect class. Sparsity: the ``"fatrelu"`` recipe (activation
L1 on every Conv-BN-ReLU, then per-layer FATReLU thresholds calibrated to a target sparsity
and a short fine-tune), as for the CNN. This module's ``main`` produced the shipped
``assets/unet.pt`` (docs/demo_data.md has the command and results)::

    flock /tmp/heavy.lock python -m exporters.demo.train_segmenter --out exporters/demo/assets

Example:
    >>> from exporters.demo.dataset import DemoDataConfig
    >>> model, metrics = train_segmenter(DemoDataConfig(n_train=16, n_test=8), epochs=1, progress=False)
    >>> 0.0 <= metrics["iou"]["background"] <= 1.0
    True
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporters.demo.dataset import DemoDataConfig, load_splits, to_tensor
from exporters.demo.models import apply_recipe, build_model
from exporters.demo.seg_metrics import mask_scores
from exporters.demo.train import TrainConfig, fit, predict_with_density, save_checkpoint
from exporters.sparsity import choose_thresholds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegTrainConfig:
    """Segmenter settings on top of :class:`~exporters.demo.train.TrainConfig` (defaults: as shipped)."""

    defect_weight: float = 3.0  # cross-entropy weight of defect pixels (background: 1)
    dice_weight: float = 1.0  # weight of the soft Dice loss of the defect class
    crop: int | None = 32  # train on a random crop of this side per batch (4x cheaper than 64x64; the U-Net
    #                        is fully convolutional and a defect is local); None = whole images
    optim: TrainConfig = TrainConfig(batch_size=32, lr=5e-3, fatrelu_target=0.6, finetune_epochs=1)


def _augment_pair(xb: torch.Tensor, mb: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random rot90/flip of images (B, C, H, W) and their masks (B, H, W)."""
    k = int(torch.randint(4, (1,), generator=gen))
    xb, mb = torch.rot90(xb, k, dims=(2, 3)), torch.rot90(mb, k, dims=(1, 2))
    if bool(torch.randint(2, (1,), generator=gen)):
        xb, mb = xb.flip(3), mb.flip(2)
    return xb, mb


def segmentation_loss(sc: SegTrainConfig):
    """``(model, x batch, mask batch, generator) -> loss`` for :func:`exporters.demo.train.fit`."""
    weight = torch.tensor([1.0, sc.defect_weight])

    def batch_loss(model: nn.Module, xb: torch.Tensor, mb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        xb, mb = _augment_pair(xb, mb, gen)
        if sc.crop is not None and sc.crop < xb.shape[-1]:
            oy, ox = (int(v) for v in torch.randint(xb.shape[-1] - sc.crop + 1, (2,), generator=gen))
            xb, mb = xb[..., oy:oy + sc.crop, ox:ox + sc.crop], mb[..., oy:oy + sc.crop, ox:ox + sc.crop]
        logits = model(xb)                                           # (B, 2, H, W)
        ce = nn.functional.cross_entropy(logits, mb, weight=weight)
        prob = logits.softmax(1)[:, 1]                               # (B, H, W) defect probability
        truth = mb.float()
        dice = 1.0 - (2.0 * (prob * truth).sum() + 1.0) / (prob.sum() + truth.sum() + 1.0)
        return ce + sc.dice_weight * dice

    return batch_loss


def evaluate_segmenter(model: nn.Module, x: torch.Tensor, masks: np.ndarray, types: np.ndarray | None = None,
                       batch_size: int = 128) -> dict[str, Any]:
    """IoU, Dice, recall and false alarms (:func:`~exporters.demo.seg_metrics.mask_scores`) and input density.

    Args:
        model: the segmenter. x: normalised (N, 3, H, W). masks: (N, H, W) truth (> 0 defect).
        types: (N,) defect type per image, for per-type scores.

    Returns:
        ``mask_scores``'s dict plus ``density`` {layer: d} and ``mean_density``.
    """
    pred, density = predict_with_density(model, x, batch_size)
    scores = mask_scores(pred.numpy(), masks, types)
    scores.update(density=density, mean_density=float(np.mean(list(density.values()))) if density else None)
    return scores


def _probe(model: nn.Module, x: torch.Tensor, m: torch.Tensor) -> str:
    s = evaluate_segmenter(model, x[:200], m[:200].numpy())
    return f"defect IoU {s['iou']['defect'] or 0:.3f} (first 200 test images), mean density {s['mean_density']:.3f}"


def train_segmenter(config: DemoDataConfig, *, epochs: int, recipe: str | None = "fatrelu", progress: bool = True,
                    seg_config: SegTrainConfig = SegTrainConfig(), cache_dir: str | None = None
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Train the U-Net on ``config``'s images and masks; evaluate on the test split.

    Args:
        config: the data (the model is fully convolutional: any ``config.size``).
        epochs: passes over the training split. recipe: sparsity recipe, None for plain training.
        progress: tqdm bar (stderr). seg_config: losses and optimiser. cache_dir: :func:`load_splits`' cache.

    Returns:
        ``(model in eval mode, metrics)``: :func:`evaluate_segmenter` on the test split, with
        ``iou_before_thresholds`` (defect IoU before the FATReLU calibration), seconds, sizes.

    Raises:
        ValueError: ``epochs < 1``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    tc = seg_config.optim
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    model = build_model("unet")
    handle = apply_recipe(model, recipe, **({"l1_alpha": tc.l1_alpha} if tc.l1_alpha is not None else {}))
    splits = load_splits(config, cache_dir)
    xtr, mtr = to_tensor(splits["train"][0]), torch.as_tensor(splits["train"][2]["mask"] > 0).long()
    xte, mte = to_tensor(splits["test"][0]), torch.as_tensor(splits["test"][2]["mask"] > 0).long()
    loss = segmentation_loss(seg_config)
    t0 = time.perf_counter()
    fit(model, handle, (xtr, mtr), (xte, mte), epochs, tc.lr, tc, progress, "train unet", loss, _probe)
    before = None
    if recipe == "fatrelu" and tc.fatrelu_target is not None:
        before = evaluate_segmenter(model, xte, mte.numpy())["iou"]["defect"]
        chosen = choose_thresholds(model, xtr[:256], tc.fatrelu_target)
        log.info("FATReLU thresholds for sparsity %.2f: %s", tc.fatrelu_target,
                 {k: round(float(v), 4) for k, v in chosen.items()})
        if tc.finetune_epochs:
            fit(model, handle, (xtr, mtr), (xte, mte), tc.finetune_epochs, tc.lr * 0.1, tc, progress,
                "fine-tune unet", loss, _probe)
    train_s = time.perf_counter() - t0
    if handle is not None:
        handle.remove_hooks()
    model.eval()
    metrics = evaluate_segmenter(model, xte, splits["test"][2]["mask"], splits["test"][2]["defect_type"])
    metrics.update(iou_before_thresholds=before, train_seconds=train_s, epochs=epochs, recipe=recipe,
                   fatrelu_target=tc.fatrelu_target if recipe == "fatrelu" else None,
                   finetune_epochs=tc.finetune_epochs if recipe == "fatrelu" else 0,
                   n_train=len(xtr), n_test=len(xte))
    log.info("trained unet: defect IoU %.4f, pixel recall %.4f, image recall %.4f, mean density %.3f in %.0f s",
             metrics["iou"]["defect"] or 0, metrics["pixel_recall"] or 0, metrics["image_recall"] or 0,
             metrics["mean_density"], train_s)
    return model, metrics


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m exporters.demo.train_segmenter --out DIR [--epochs N] [--n-train N] ...``."""
    p = argparse.ArgumentParser(prog="python -m exporters.demo.train_segmenter", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for unet.pt")
    p.add_argument("--epochs", type=int, default=30, help="default: 30, as shipped")
    p.add_argument("--n-train", type=int, default=4000, help="training images (default 4000)")
    p.add_argument("--n-test", type=int, default=1000, help="test images (default 1000)")
    p.add_argument("--recipe", default="fatrelu", help="sparsity recipe; 'none' for plain training")
    p.add_argument("--fatrelu-target", type=float, default=None, help="FATReLU calibration sparsity (default 0.6)")
    p.add_argument("--defect-weight", type=float, default=None, help="cross-entropy weight of defect pixels (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = DemoDataConfig(n_train=a.n_train, n_test=a.n_test)
    sc = SegTrainConfig(**({"defect_weight": a.defect_weight} if a.defect_weight is not None else {}))
    optim = replace(sc.optim, threads=a.threads,
                    **({"fatrelu_target": a.fatrelu_target} if a.fatrelu_target is not None else {}))
    model, metrics = train_segmenter(cfg, epochs=a.epochs, recipe=None if a.recipe == "none" else a.recipe,
                                     progress=not a.no_progress, seg_config=replace(sc, optim=optim))
    command = "python -m exporters.demo.train_segmenter " + " ".join(sys.argv[1:] if argv is None else argv)
    path = save_checkpoint(model, "unet", metrics, cfg, Path(a.out) / "unet.pt", command)
    sys.stdout.write(json.dumps({"checkpoint": str(path), **metrics}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
