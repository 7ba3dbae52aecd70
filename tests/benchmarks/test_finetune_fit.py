"""The fine-tune loop shared by benchmarks/experiments/cnn_fatrelu.py and vit_thresholds.py."""
from __future__ import annotations

import copy

import torch
from torch import nn

from benchmarks.experiments.cnn_fatrelu import fit
from exporters.sparsity import distillation_loss


def _data(n: int = 300) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(n, 8)
    y = (x[:, 0] > 0).long()
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), x, y


def test_without_teacher_matches_the_plain_loop():
    """distill_alpha without a teacher, or a teacher with alpha 0, must not change the run."""
    model, x, y = _data()
    plain = fit(copy.deepcopy(model), x, y, 2, 1e-2, 3, cosine=True)
    same = fit(copy.deepcopy(model), x, y, 2, 1e-2, 3, cosine=True, teacher=copy.deepcopy(model),
               distill_alpha=0.0)
    for a, b in zip(plain.parameters(), same.parameters()):
        assert torch.equal(a, b)


def test_distillation_pulls_towards_the_teacher_and_leaves_it_alone():
    model, x, y = _data()
    teacher = fit(copy.deepcopy(model), x, y, 3, 1e-2, 0, cosine=True)
    before = [p.detach().clone() for p in teacher.parameters()]
    y_wrong = torch.zeros_like(y)  # labels alone would teach "always class 0"
    ce = fit(copy.deepcopy(model), x, y_wrong, 2, 1e-2, 1, cosine=False)
    kd = fit(copy.deepcopy(model), x, y_wrong, 2, 1e-2, 1, cosine=False, teacher=teacher, distill_alpha=20.0)
    with torch.no_grad():
        gap_kd, gap_ce = (float(distillation_loss(m(x), teacher(x))) for m in (kd, ce))
    assert gap_kd < 0.5 * gap_ce  # measured 0.0066 vs 0.0149
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_hooks_run_per_step_and_per_epoch_in_eval_mode():
    model, x, y = _data(256)  # 2 batches per epoch
    steps, epochs_seen = [], []
    fit(model, x, y, 3, 1e-2, 0, cosine=True, after_step=lambda: steps.append(1),
        epoch_end=lambda e: epochs_seen.append((e, model.training)))
    assert len(steps) == 6
    assert epochs_seen == [(1, False), (2, False), (3, False)]
    assert not model.training
