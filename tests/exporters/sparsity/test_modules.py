from __future__ import annotations

import pytest
import torch
from torch import nn

from exporters.sparsity import (
    JSquaredReLU, LinearRamp, MixedActivation, RestrictedLayerNorm, SparsifyError, ZerothBias,
)

Z = torch.tensor([-3.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 2.0, 10.0])


def test_jsrelu_formula_and_zero_set():
    out = JSquaredReLU()(Z)
    expected = torch.where(Z >= 0, Z * Z / 2 + Z, torch.zeros(()))
    torch.testing.assert_close(out, expected)
    assert torch.equal(out == 0, torch.relu(Z) == 0)


def test_jsrelu_gradient_is_z_plus_one_above_zero_and_zero_below():
    z = Z[Z != 0].clone().requires_grad_(True)
    JSquaredReLU()(z).sum().backward()
    expected = torch.where(z > 0, z + 1, torch.zeros(())).detach()
    torch.testing.assert_close(z.grad, expected)


def test_linear_ramp_values_and_validation():
    ramp = LinearRamp(4)
    assert [ramp.value(s) for s in (0, 1, 4, 9)] == [0.0, 0.25, 1.0, 1.0]
    assert LinearRamp(0).value(0) == 1.0
    with pytest.raises(SparsifyError, match="non-negative int"):
        LinearRamp(-1)


def test_mixed_activation_schedule_blends_relu_to_jsrelu():
    act = MixedActivation(nn.ReLU(inplace=True), ramp_steps=4)
    z = torch.randn(64)
    torch.testing.assert_close(act(z), torch.relu(z))  # k = 0
    act.step()
    act.step()
    assert act.k == 0.5
    blend = act(z)
    torch.testing.assert_close(blend, 0.5 * torch.relu(z) + 0.5 * JSquaredReLU()(z))
    assert torch.equal(blend == 0, torch.relu(z) == 0)  # ReLU base keeps ReLU's zero set
    for _ in range(5):
        act.step()
    torch.testing.assert_close(act(z), JSquaredReLU()(z))  # k clamps at 1


def test_mixed_activation_inplace_base_does_not_corrupt_input_and_state_persists():
    act = MixedActivation(nn.ReLU(inplace=True), ramp_steps=2)
    act.step()
    z = torch.randn(32)
    before = z.clone()
    act(z)
    assert torch.equal(z, before)
    other = MixedActivation(nn.ReLU(), ramp_steps=2)
    other.load_state_dict(act.state_dict())
    assert other.k == 0.5


def test_zeroth_bias_adds_table_per_position_batch_first_and_sequence_first():
    zb = ZerothBias(tokens=3, d_model=4)
    with torch.no_grad():
        zb.table.copy_(torch.arange(12.0).reshape(3, 4))
    x = torch.zeros(2, 3, 4)  # (B, T, C)
    torch.testing.assert_close(zb(x), zb.table.detach().expand(2, 3, 4))
    seq_first = ZerothBias(tokens=3, d_model=4, token_dim=0)
    seq_first.load_state_dict(zb.state_dict())
    out = seq_first(torch.zeros(3, 2, 4))  # (T, B, C)
    torch.testing.assert_close(out[:, 1], zb.table.detach())
    torch.testing.assert_close(zb(torch.zeros(1, 2, 4))[0], zb.table.detach()[:2])  # shorter sequence


def test_zeroth_bias_rejects_longer_sequence():
    with pytest.raises(SparsifyError, match="tokens"):
        ZerothBias(tokens=3, d_model=4)(torch.zeros(1, 5, 4))


def test_zeroth_bias_clip_uses_abs_gamma():
    zb = ZerothBias(tokens=2, d_model=3)
    with torch.no_grad():
        zb.table.copy_(torch.tensor([[5.0, -5.0, 0.01], [-0.01, 0.3, -0.3]]))
    zb.clip_(torch.tensor([1.0, -2.0, 0.5]))  # bounds 0.1, 0.2, 0.05
    torch.testing.assert_close(zb.table.detach(), torch.tensor([[0.1, -0.2, 0.01], [-0.01, 0.2, -0.05]]))
    zb.clip_(None)  # no LayerNorm: bound = clip
    assert float(zb.table.detach().abs().max()) <= 0.1 + 1e-7


def test_restricted_layernorm_scratch_has_frozen_zero_bias_and_clamps_gamma():
    ln = RestrictedLayerNorm(6, mode="scratch")
    assert not ln.bias.requires_grad and float(ln.bias.abs().sum()) == 0.0
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([-2.0, 0.0, 0.5, 1.0, 1.5, 3.0]))
    ln.after_step()
    torch.testing.assert_close(ln.weight.detach(), torch.tensor([1.0, 1.0, 1.0, 1.0, 1.5, 3.0]))
    x = torch.randn(4, 6)
    torch.testing.assert_close(ln(x), nn.functional.layer_norm(x, (6,), ln.weight, ln.bias, ln.eps))


def test_restricted_layernorm_finetune_raises_abs_gamma_gradually_keeping_sign():
    src = nn.LayerNorm(4)
    with torch.no_grad():
        src.weight.copy_(torch.tensor([0.1, -0.1, 0.8, -2.0]))
        src.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 1.0]))
    ln = RestrictedLayerNorm.from_layernorm(src, mode="finetune", ramp_steps=4)
    assert not ln.bias.requires_grad and ln.weight.requires_grad
    torch.testing.assert_close(ln.bias.detach(), src.bias.detach())  # beta frozen, kept
    ln.after_step()  # floor 0.25
    torch.testing.assert_close(ln.weight.detach(), torch.tensor([0.25, -0.25, 0.8, -2.0]))
    for _ in range(3):
        ln.after_step()  # floor 1.0
    torch.testing.assert_close(ln.weight.detach(), torch.tensor([1.0, -1.0, 1.0, -2.0]))


def test_restricted_layernorm_from_layernorm_scratch_and_errors():
    src = nn.LayerNorm(3)
    with torch.no_grad():
        src.bias.fill_(0.7)
    ln = RestrictedLayerNorm.from_layernorm(src, mode="scratch")
    assert float(ln.bias.abs().sum()) == 0.0 and bool((ln.weight >= 1).all())
    with pytest.raises(SparsifyError, match="elementwise_affine"):
        RestrictedLayerNorm.from_layernorm(nn.LayerNorm(3, elementwise_affine=False), mode="scratch")
    with pytest.raises(SparsifyError, match="unknown"):
        RestrictedLayerNorm(3, mode="sideways")
