"""calibrate(): densities, firing split, ReLU detection, data sources."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from edge_runtime.errors import InvalidArgumentError
from exporters import calibrate
from exporters.calibrate import load_image
from tests.exporters.models import build


def test_mlp_density_matches_manual():
    model = build("mlp")
    x = torch.randn(40, 12)
    report = calibrate(model, x, batch_size=7)
    h1 = torch.relu(model.fc1(x))
    assert report.samples == 40
    assert report.layer("fc1").density == 1.0 and not report.layer("fc1").relu_fed
    stats = report.layer("fc2")
    assert stats.relu_fed and stats.preact_quantiles is not None
    assert stats.density == pytest.approx(float((h1 != 0).float().mean()), abs=1e-6)
    firing = (h1 != 0).float().mean(0).numpy()
    assert np.allclose(stats.firing, firing)
    assert stats.hot_fraction == pytest.approx(float(np.mean(firing >= 0.5)))
    assert stats.cold_fraction == pytest.approx(float(np.mean(firing < 0.05)))
    assert stats.density_p10 <= stats.density_p50 <= stats.density_p90


def test_train_mode_warns_and_is_restored():
    model = build("cnn").train()
    with pytest.warns(UserWarning, match="train mode"):
        report = calibrate(model, np.random.rand(4, 3, 32, 32).astype(np.float32))
    assert model.training
    assert report.layer("conv2").relu_fed and report.layer("fc2").relu_fed
    assert not report.layer("fc1").relu_fed  # fed by average pooling, not by the ReLU


def test_attention_projections_skipped_relu_mlp_found():
    report = calibrate(build("vit"), torch.randn(3, 3, 32, 32))
    names = {s.module for s in report.layers}
    assert "blocks.0.attn.out_proj" not in names
    assert report.layer("blocks.0.fc2").relu_fed and report.layer("blocks.0.fc2").density < 1


def test_image_folder_and_preprocessing(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            img = np.full((10, 12, 3), 40 * i, np.uint8)
            img[..., 0] = 255
            Image.fromarray(img).save(tmp_path / cls / f"{i}.png")
    pre = {"input_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
           "channel_order": "BGR"}
    arr = load_image(tmp_path / "cat" / "0.png", pre)
    assert arr.shape == (3, 32, 32)
    assert np.allclose(arr[2], 1.0) and np.allclose(arr[0], -1.0)  # red moved last (BGR)
    report = calibrate(build("cnn"), tmp_path, preprocessing=pre, batch_size=4)
    assert report.samples == 6 and report.inputs.shape == (6, 3, 32, 32)


def test_bad_inputs_raise():
    with pytest.raises(InvalidArgumentError, match="input_size"):
        calibrate(build("cnn"), ".", preprocessing=None)
    with pytest.raises(InvalidArgumentError, match="no samples"):
        calibrate(build("mlp"), torch.zeros(0, 12))
    with pytest.raises(InvalidArgumentError, match="Unsupported"):
        calibrate(build("mlp"), 3)
