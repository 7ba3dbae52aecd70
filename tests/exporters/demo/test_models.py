"""Tests for the demo models, the shipped checkpoints and a one-epoch training smoke test."""
from __future__ import annotations

import pytest
import torch

from edge_runtime.errors import InvalidArgumentError
from exporters.demo.dataset import DemoDataConfig, make_split, to_tensor
from exporters.demo.models import (
    InspectionCNN, InspectionViT, apply_recipe, build_model, load_checkpoint, load_pretrained, pretrained_info,
)
from exporters.demo.train import TrainConfig, evaluate, save_checkpoint, train
from exporters.sparsity import FATReLU, JSquaredReLU, RestrictedLayerNorm, ZerothBias

N_EVAL = 500  # the first 500 images of the documented 1,000-image test split


@pytest.fixture(scope="module")
def test_prefix():
    """The prefix of the shipped models' test split (a prefix: same images and labels)."""
    x, y, _ = make_split(DemoDataConfig(n_train=0, n_test=N_EVAL), "test")
    return to_tensor(x), torch.as_tensor(y)


@pytest.mark.parametrize("cls", [InspectionCNN, InspectionViT])
def test_models_output_two_logits(cls):
    model = cls().eval()
    assert model(torch.randn(3, 3, 64, 64)).shape == (3, 2)
    assert all(model.get_submodule(n) is not None for n in model.sparse_input_layers())


def test_vit_accepts_other_sizes_and_rejects_bad_ones():
    assert InspectionViT(image=96).tokens == 144
    with pytest.raises(ValueError, match="multiple"):
        InspectionViT(image=100)
    with pytest.raises(InvalidArgumentError, match="available"):
        build_model("resnet")


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_shipped_model_loads_offline_and_reaches_documented_accuracy(name, test_prefix, monkeypatch):
    def no_network(*_a, **_k):
        raise AssertionError("load_pretrained must not touch the network")

    monkeypatch.setattr("socket.socket.connect", no_network)
    model = load_pretrained(name)
    assert not model.training
    info = pretrained_info(name)
    x, y = test_prefix
    metrics = evaluate(model, x, y)
    documented = info["metrics"]["test_accuracy"]      # on the full 1,000-image test split
    assert documented > {"cnn": 0.92, "vit": 0.89}[name]   # docs/demo_data.md
    assert abs(metrics["test_accuracy"] - documented) <= 0.02, (metrics["test_accuracy"], documented)
    assert metrics["mean_density"] < 0.9                # the shipped models are sparse


def test_shipped_models_carry_their_sparsity_modules():
    cnn = load_pretrained("cnn")
    assert sum(isinstance(m, FATReLU) for m in cnn.modules()) == 6
    vit = load_pretrained("vit")
    kinds = {type(m) for m in vit.modules()}
    assert {JSquaredReLU, RestrictedLayerNorm, ZerothBias} <= kinds


def test_one_epoch_training_smoke(tmp_path):
    cfg = DemoDataConfig(n_train=32, n_test=16)
    quick = TrainConfig(batch_size=16, finetune_epochs=1)
    model, metrics = train("cnn", cfg, epochs=1, progress=False, use_cache=False, train_config=quick)
    assert {"test_accuracy", "defect_recall", "density", "mean_density", "per_type_recall"} <= set(metrics)
    assert set(metrics["density"]) == set(model.sparse_input_layers())
    assert all(0.0 <= d <= 1.0 for d in metrics["density"].values())
    assert metrics["mean_density"] < 0.45          # FATReLU calibrated to 70 % sparsity on the train images
    path = save_checkpoint(model, "cnn", metrics, cfg, tmp_path / "cnn.pt")
    again, info = load_checkpoint(str(path))
    x = to_tensor(make_split(cfg, "test")[0])
    with torch.no_grad():
        assert torch.allclose(model(x), again(x), atol=1e-6)
    assert info["recipe"] == "fatrelu" and info["data_config"]["n_train"] == 32


def test_vit_takes_the_peng_modules_and_steps():
    model = InspectionViT()
    handle = apply_recipe(model, "peng-scratch")
    assert len(handle.blocks) == 3 and any(isinstance(m, ZerothBias) for m in model.modules())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    loss = handle.loss(torch.nn.functional.cross_entropy(model(x), y))
    loss.backward()
    opt.step()
    handle.after_step()
    norms = [m for m in model.modules() if isinstance(m, RestrictedLayerNorm)]
    assert norms and all(bool((n.weight >= 1.0).all()) for n in norms)   # gamma clamped to >= 1
