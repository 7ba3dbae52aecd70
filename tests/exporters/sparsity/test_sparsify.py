from __future__ import annotations

import pytest
import torch
from torch import nn

from exporters.sparsity import (
    FATReLU, JSquaredReLU, MixedActivation, Recipe, RestrictedLayerNorm, SparsifyError, ZerothBias,
    choose_thresholds, find_conv_blocks, find_mlp_blocks, sparsify,
)
from tests.exporters.sparsity.tiny_models import TinyMobileNetV2, TinyResNet, TinyViT, sequential_cnn

IMAGES = torch.randn(4, 3, 8, 8)


def test_discovery_on_vit_finds_mlp_with_layernorm_in_front():
    blocks = find_mlp_blocks(TinyViT(torch_mha=True))
    assert [(b.fc1, b.activation, b.fc2, b.norm) for b in blocks] == [
        (f"blocks.{i}.mlp.fc1", f"blocks.{i}.mlp.act", f"blocks.{i}.mlp.fc2", f"blocks.{i}.norm2") for i in (0, 1)
    ]
    assert find_conv_blocks(TinyViT()) == []  # patch embedding has no activation


def test_fatrelu_on_sequential_cnn_replaces_conv_and_head_activations():
    model = sequential_cnn()
    s = sparsify(model, "fatrelu")
    assert sorted(r.name for r in s.modules) == ["2", "4", "8"]
    assert all(isinstance(model[int(n)], FATReLU) for n in ("2", "4", "8"))
    assert model[2].channel_dim == 1 and model[8].channel_dim == -1
    assert model(IMAGES).shape == (4, 4)


def test_fatrelu_on_resnet_replaces_shared_inplace_relu_for_both_uses():
    model = TinyResNet().eval()
    before = model(IMAGES)
    s = sparsify(model, "fatrelu", fatrelu_per_channel=True)
    assert {r.name for r in s.modules} == {"relu", "layer1.0.relu", "layer1.1.relu"}
    torch.testing.assert_close(model(IMAGES), before)  # t = 0 is ReLU
    calls = []
    model.layer1[0].relu.register_forward_hook(lambda *_: calls.append(1))
    choose_thresholds(model, IMAGES, 0.8)
    model(IMAGES)
    assert len(calls) == 4  # used twice per forward: calibration forward + this forward
    assert s.sparsity(IMAGES)["layer1.0.relu"] > 0.7


def test_fatrelu_on_mobilenet_keeps_relu6_cap():
    model = TinyMobileNetV2()
    s = sparsify(model, "fatrelu")
    assert len(s.modules) == 5 and all(r.before == "ReLU6" for r in s.modules)
    assert all(r.module.cap == 6.0 for r in s.modules)
    assert model(IMAGES).shape == (4, 4)


@pytest.mark.parametrize("torch_mha", [True, False])
def test_peng_scratch_on_gelu_vit_swaps_to_jsrelu_with_warning(torch_mha, caplog):
    model = TinyViT(torch_mha=torch_mha)
    with caplog.at_level("WARNING"):
        s = sparsify(model, "peng-scratch", tokens=model.tokens)
    assert "GELU" in caplog.text
    kinds = sorted((r.kind, r.name) for r in s.modules)
    assert kinds == sorted(
        [("activation", f"blocks.{i}.mlp.act") for i in (0, 1)]
        + [("layernorm", f"blocks.{i}.norm2") for i in (0, 1)]
        + [("zeroth_bias", f"blocks.{i}.mlp.fc1.0") for i in (0, 1)]
    )
    assert isinstance(model.blocks[0].mlp.act, JSquaredReLU)
    assert isinstance(model.blocks[0].norm2, RestrictedLayerNorm)
    assert isinstance(model.blocks[0].mlp.fc1[0], ZerothBias)
    assert model(IMAGES).shape == (4, 4)


def _one_sgd_step(s, lr: float = 1.0) -> None:
    opt = torch.optim.SGD([p for p in s.model.parameters() if p.requires_grad], lr=lr)
    loss = s.loss(s.model(IMAGES).pow(2).sum())
    opt.zero_grad()
    loss.backward()
    opt.step()
    s.after_step()


def test_peng_scratch_after_step_clips_zeroth_bias_and_clamps_gamma():
    model = TinyViT(act=nn.ReLU, torch_mha=False)
    s = sparsify(model, "peng-scratch", tokens=model.tokens)
    for _ in range(3):
        _one_sgd_step(s, lr=0.05)  # steps big enough that the constraints bind
    for block in model.blocks:
        gamma = block.norm2.weight.detach()
        table = block.mlp.fc1[0].table.detach()
        assert bool((gamma >= 1).all())
        assert bool((table.abs() <= 0.1 * gamma.abs() + 1e-6).all())
        assert float(table.abs().max()) > 0  # it did train
        assert float(block.norm2.bias.detach().abs().sum()) == 0.0


def test_peng_finetune_ramps_mixing_and_gamma_floor():
    model = TinyViT(act=nn.ReLU, torch_mha=False)
    with torch.no_grad():
        model.blocks[0].norm2.weight.fill_(0.2)
    s = sparsify(model, "peng-finetune", tokens=model.tokens, ramp_steps=4)
    act = model.blocks[0].mlp.act
    assert isinstance(act, MixedActivation) and act.k == 0.0
    _one_sgd_step(s, lr=1e-3)
    _one_sgd_step(s, lr=1e-3)
    assert act.k == 0.5
    assert float(model.blocks[0].norm2.weight.detach().abs().min()) >= 0.5 - 1e-6


def test_recipe_fields_pick_modules_one_by_one():
    model = TinyViT(act=nn.ReLU, torch_mha=False)
    recipe = Recipe(targets=("mlp",), activation="jsrelu", include=("blocks.1",))
    s = sparsify(model, recipe)
    assert [r.name for r in s.modules] == ["blocks.1.mlp.act"]
    assert isinstance(model.blocks[0].mlp.act, nn.ReLU)


def test_sparsify_errors_say_what_to_do():
    with pytest.raises(SparsifyError, match="available"):
        sparsify(sequential_cnn(), "magic")
    with pytest.raises(SparsifyError, match="tokens=197"):
        sparsify(TinyViT(), "peng-scratch")
    with pytest.raises(SparsifyError, match="no mlp block"):
        sparsify(TinyResNet(), "peng-scratch", tokens=5)
    with pytest.raises(SparsifyError, match="unknown Recipe fields"):
        sparsify(sequential_cnn(), "fatrelu", alpha=1.0)
    with pytest.raises(SparsifyError, match="activation"):
        Recipe(activation="swish")
