"""Threshold annealing (exporters/sparsity/anneal.py): targets reached, ramp, per-channel, recipes, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from exporters.sparsity import FATReLU, ShiftedReLU, SparsifyError, ThresholdAnneal, activation_sparsity, sparsify
from tests.exporters.sparsity.smooth_models import TinyYolo, sequential_cnn


def _feed(fat: FATReLU, anneal: ThresholdAnneal, batches: int, shape=(64, 8, 4, 4), shift=0.0) -> None:
    fat.train()
    for _ in range(batches):
        fat(torch.randn(shape) + shift)
        anneal.step()


def _zero_fraction(fat: FATReLU, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((fat.eval()(x) == 0).float().mean())


def test_reaches_the_target_on_a_fresh_batch():
    torch.manual_seed(0)
    fat = FATReLU(0.0)
    a = ThresholdAnneal({"act": fat}, target_sparsity=0.85, steps=10, momentum=0.5)
    _feed(fat, a, 40)
    assert _zero_fraction(fat, torch.randn(256, 8, 4, 4)) == pytest.approx(0.85, abs=0.02)
    assert a.thresholds()["act"] == pytest.approx(1.036, abs=0.05)  # N(0, 1)'s 85% quantile


def test_ramp_starts_at_the_layers_own_sparsity_and_is_linear():
    torch.manual_seed(0)
    fat = FATReLU(0.0)
    a = ThresholdAnneal({"act": fat}, target_sparsity=0.9, steps=4, momentum=0.0)
    _feed(fat, a, 1, shift=0.0)  # the first step measures the start (about 0.5 for N(0, 1))
    start = a._start["act"]
    assert start == pytest.approx(0.5, abs=0.03)
    assert a.current_target("act") == pytest.approx(start + (0.9 - start) / 4)
    _feed(fat, a, 3)
    assert a.current_target("act") == pytest.approx(0.9)


def test_target_below_the_natural_sparsity_keeps_the_threshold_at_zero():
    fat = FATReLU(0.0)
    a = ThresholdAnneal({"act": fat}, target_sparsity=0.2, steps=0, momentum=0.0)
    _feed(fat, a, 3, shift=-1.0)  # ~84% of inputs already negative
    assert float(fat.threshold) == 0.0


def test_per_channel_thresholds_reach_the_target_in_each_channel():
    torch.manual_seed(0)
    fat = FATReLU(0.0, num_channels=3, channel_dim=1)
    a = ThresholdAnneal({"act": fat}, target_sparsity=0.8, steps=0, momentum=0.0)
    scale = torch.tensor([0.1, 1.0, 10.0]).reshape(1, 3, 1, 1)
    fat.train()(torch.randn(512, 3, 4, 4) * scale)
    a.step()
    out = fat.eval()(torch.randn(512, 3, 4, 4) * scale)
    per = (out == 0).float().mean(dim=(0, 2, 3))
    assert torch.allclose(per, torch.full((3,), 0.8), atol=0.03), per
    assert fat.threshold[0] < fat.threshold[1] < fat.threshold[2]


def test_eval_forwards_do_not_move_thresholds():
    fat = FATReLU(0.0)
    a = ThresholdAnneal({"act": fat}, target_sparsity=0.9, steps=0)
    with torch.no_grad():
        fat.train()(torch.randn(100))
    fat.eval()(torch.randn(100))
    a.step()
    assert float(fat.threshold) == 0.0
    a.remove()
    fat.train()(torch.randn(100))
    a.step()
    assert float(fat.threshold) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    ({"target_sparsity": 1.0, "steps": 1}, "target_sparsity=1.0 must be in"),
    ({"target_sparsity": 0.5, "steps": -1}, "steps=-1"),
    ({"target_sparsity": 0.5, "steps": 1, "momentum": 1.0}, "momentum=1.0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(SparsifyError, match=match):
        ThresholdAnneal({"a": FATReLU(0.0)}, **kwargs)


def test_learnable_thresholds_are_refused():
    with pytest.raises(SparsifyError, match="fixed-threshold FATReLU"):
        ThresholdAnneal({"a": FATReLU(0.0, learnable=True)}, 0.5, 1)


def test_recipe_errors():
    with pytest.raises(SparsifyError, match="target_sparsity=1.5"):
        sparsify(sequential_cnn(), "relufy", target_sparsity=1.5)
    with pytest.raises(SparsifyError, match="none of"):  # the ViT-style default: J-SquaredReLU, no FATReLU
        sparsify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "fatrelu", activation="relu",
                 target_sparsity=0.5)


def _train(s, x: torch.Tensor, steps: int) -> None:
    opt = torch.optim.Adam(s.model.parameters(), lr=2e-3)
    for i in range(steps):
        s.model.train()
        out = s.model(x[(i * 32) % len(x):(i * 32) % len(x) + 32])
        loss = s.loss() if hasattr(s, "teacher") else s.loss(out.pow(2).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.after_step()


def test_relufy_with_a_target_anneals_after_the_blend_and_exports_plain_thresholds():
    torch.manual_seed(0)
    x = torch.randn(256, 3, 16, 16)
    s = sparsify(TinyYolo(), "relufy", ramp_steps=10, target_sparsity=0.85, anneal_steps=20)
    names = list(s.activation_names)
    assert all(type(b.new) is ShiftedReLU for b in s.blends.values())
    _train(s, x, 10)  # the blend: thresholds untouched
    assert not s.blends and s.anneal.step_count == 0
    assert all(float(s.model.get_submodule(n).threshold) == 0.0 for n in names)
    _train(s, x, 40)  # ramp (20 steps) + 20 at the target
    sp = activation_sparsity(s.model.eval(), x, names)
    # quantiles of training-mode inputs (BatchNorm on batch statistics); eval mode uses running ones
    assert 0.8 <= sp["mean"] <= 0.95, sp
    assert all(float(s.model.get_submodule(n).threshold) > 0 for n in names)
    model = s.finalize()
    assert s.anneal is None
    assert all(type(model.get_submodule(n)) is ShiftedReLU for n in names)


def test_fatrelu_recipe_with_a_target_anneals_from_the_first_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    s = sparsify(model, "fatrelu", target_sparsity=0.9, anneal_steps=5)
    x = torch.randn(256, 16)
    _train(s, x, 45)  # 5 ramp steps, then the moving average (momentum 0.9) settles
    assert activation_sparsity(s.model.eval(), x, s.activation_names)["mean"] == pytest.approx(0.9, abs=0.05)


def test_export_time_thresholds_keep_a_shifted_relus_shift():
    from exporters.thresholds import fit_thresholds

    torch.manual_seed(0)
    act = ShiftedReLU(0.3)
    model = nn.Sequential(nn.Linear(8, 32), act, nn.Linear(32, 3)).eval()
    x = torch.randn(512, 8)
    fit = fit_thresholds(model, x, target_sparsity=0.9, max_accuracy_drop=100.0)
    new = fit.model[1]
    assert isinstance(new, nn.Sequential) and type(new[1]) is ShiftedReLU  # gate first, then the same shift
    with torch.no_grad():
        z = fit.model[0](x)
        out = new(z)
    t = float(new[0].threshold)
    assert t > 0.3
    np.testing.assert_allclose(out.numpy(), torch.where(z >= t, z - 0.3, torch.zeros(())).clamp(min=0).numpy(),
                               rtol=1e-6, atol=1e-6)
