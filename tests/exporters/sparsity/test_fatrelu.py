from __future__ import annotations

import pytest
import torch
from torch import nn

from exporters.sparsity import ActivationL1, FATReLU, SparsifyError, activation_sparsity, choose_thresholds, sparsify


def test_fatrelu_formula_per_layer_and_cap():
    x = torch.tensor([-1.0, 0.0, 0.49, 0.5, 3.0, 7.0])
    torch.testing.assert_close(FATReLU(0.5)(x), torch.tensor([0.0, 0.0, 0.0, 0.5, 3.0, 7.0]))
    torch.testing.assert_close(FATReLU(0.5, cap=6.0)(x), torch.tensor([0.0, 0.0, 0.0, 0.5, 3.0, 6.0]))
    torch.testing.assert_close(FATReLU(0.0)(x), torch.relu(x))  # t = 0 is ReLU


def test_fatrelu_per_channel_on_conv_layout():
    fat = FATReLU(num_channels=2, channel_dim=1)
    with torch.no_grad():
        fat.threshold.copy_(torch.tensor([0.0, 1.0]))
    x = torch.full((1, 2, 2, 2), 0.5)  # (N, C, H, W)
    out = fat(x)
    assert bool((out[:, 0] == 0.5).all()) and bool((out[:, 1] == 0).all())
    with pytest.raises(SparsifyError, match="channels"):
        fat(torch.ones(1, 3, 2, 2))


def test_fatrelu_rejects_bad_arguments():
    with pytest.raises(SparsifyError, match=">= 0"):
        FATReLU(-0.1)
    with pytest.raises(SparsifyError, match="num_channels"):
        FATReLU(num_channels=0)


def test_learnable_threshold_gets_gradient_without_changing_forward():
    fat = FATReLU(0.3, learnable=True)
    x = torch.linspace(-1, 1, 41, requires_grad=True)
    out = fat(x)
    torch.testing.assert_close(out.detach(), torch.where(x >= 0.3, x, 0.0).detach())
    out.sum().backward()
    assert float(fat.threshold.grad) < 0  # raising t lowers the sum of outputs
    torch.testing.assert_close(x.grad, (x >= 0.3).float())  # straight-through: hard mask for x
    with torch.no_grad():
        fat.threshold.fill_(-0.5)
    fat.after_step()
    assert float(fat.threshold.detach()) == 0.0


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("target", [0.6, 0.9])
def test_choose_thresholds_reaches_target_sparsity(per_channel, target):
    model = nn.Sequential(nn.Linear(8, 32), FATReLU(num_channels=32 if per_channel else None))
    calib = [torch.randn(128, 8) for _ in range(4)]
    thresholds = choose_thresholds(model, calib, target)
    assert set(thresholds) == {"1"}
    assert thresholds["1"].shape == ((32,) if per_channel else ())
    held_out = torch.randn(2048, 8)
    measured = activation_sparsity(model, held_out, ["1"])["1"]
    assert abs(measured - target) < 0.03


def test_choose_thresholds_keeps_zero_when_relu_is_already_sparser():
    model = nn.Sequential(nn.Linear(4, 16), FATReLU())
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # everything negative: ReLU sparsity 1.0
    t = choose_thresholds(model, torch.randn(64, 4), 0.5)
    assert float(t["1"]) == 0.0


def test_choose_thresholds_errors():
    with pytest.raises(SparsifyError, match="no FATReLU"):
        choose_thresholds(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), torch.randn(4, 2), 0.5)
    model = nn.Sequential(nn.Linear(2, 2), FATReLU())
    with pytest.raises(SparsifyError, match=r"\[0, 1\)"):
        choose_thresholds(model, torch.randn(4, 2), 1.0)
    with pytest.raises(SparsifyError, match="never ran"):
        choose_thresholds(model, [], 0.5)
    with pytest.raises(SparsifyError, match="calibration batch"):
        choose_thresholds(model, ["not a tensor"], 0.5)


def test_l1_records_only_training_forwards():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    l1 = ActivationL1({"1": model[1]}, alpha=2.0)
    x = torch.randn(5, 4)
    model(x)
    with torch.no_grad():  # the hook ignores no-grad forwards
        expected = 2.0 * model[1](model[0](x)).abs().mean()
    torch.testing.assert_close(l1.penalty().detach(), expected)
    assert float(l1.penalty()) == 0.0  # consumed
    model.eval()
    model(x)
    assert float(l1.penalty()) == 0.0
    l1.remove()
    model.train()
    model(x)
    assert float(l1.penalty()) == 0.0
    with pytest.raises(SparsifyError, match="alpha"):
        ActivationL1({}, alpha=-1.0)


def _train_mlp(l1_alpha: float) -> float:
    """100 Adam steps of a tiny classifier; returns the hidden ReLU's sparsity."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=gen)
    y = (x @ torch.randn(16, 4, generator=gen)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    s = sparsify(model, "fatrelu", l1_alpha=l1_alpha) if l1_alpha > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(x), y)
        loss = s.loss(loss) if s is not None else loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s is not None:
            s.after_step()
    assert float(nn.functional.cross_entropy(model(x), y).detach()) < 0.2  # still learned the task
    return activation_sparsity(model, x, ["2"])["2"]


def test_l1_regulariser_increases_sparsity_in_short_run():
    baseline = _train_mlp(0.0)
    regularised = _train_mlp(0.3)
    assert regularised > baseline + 0.1, (baseline, regularised)  # measured: 0.46 -> 0.67
