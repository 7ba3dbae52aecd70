"""One exported bundle (ONNX + TFLite if possible) of a tiny hand-set CNN, and labelled PNG images.

ColorNet predicts the colour channel with the highest mean (after preprocessing), so its
accuracy depends on the manifest's mean/std: a wrong mean shifts channels and flips labels.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

LABELS = ["ok", "defect", "scratch"]
TRUE_PRE = {"input_size": [32, 32], "resize": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
            "channel_order": "RGB", "value_range": [0, 1], "layout": "NCHW"}
PER_CLASS = 6


class ColorNet(torch.nn.Module):
    """conv 3x3 (channel means, and their negatives) -> ReLU -> global average -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(6, 3)
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(3):
                self.conv.weight[c, c] = 1.0 / 9  # 3x3 box average of channel c
                self.conv.weight[c + 3, c] = -1.0 / 9
            self.conv.bias.copy_(torch.tensor([4.0, 4.0, 4.0, 0.0, 0.0, 0.0]))  # keep 0..2 positive
            self.fc.weight.zero_()
            self.fc.weight[:, :3] = 2 * torch.eye(3)
            self.fc.weight[:, 3:] = -0.5 * torch.eye(3)
            self.fc.bias.zero_()

    def forward(self, x):  # (B, 3, 32, 32) -> (B, 3)
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def make_image(label: int, seed: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """uint8 (H, W, 3): noise in 40..140 on every channel, +70 on channel ``label``."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(40, 140, (size[1], size[0], 3))
    img[:, :, label] += 70
    return img.astype(np.uint8)


def preprocess(images: np.ndarray, pre: dict = TRUE_PRE) -> np.ndarray:
    """Reference preprocessing written out by hand (NCHW float32)."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.fixture(scope="session")
def model() -> ColorNet:
    return ColorNet().eval()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for label, name in enumerate(LABELS):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            Image.fromarray(make_image(label, 100 * label + i)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, model: ColorNet) -> Path:
    """The only export (with the slow TFLite conversion) of this test package."""
    from exporters import export

    images = np.stack([make_image(i % 3, 1000 + i) for i in range(12)])
    calib = torch.from_numpy(preprocess(images))
    out = tmp_path_factory.mktemp("export") / "bundle"
    export(model, calib[:1], out, calibration=calib, formats=("onnx", "tflite?"), labels=LABELS,
           preprocessing=TRUE_PRE, golden_samples=12)
    return out


@pytest.fixture
def bundle(exported: Path, tmp_path: Path) -> Path:
    """A private copy of the exported bundle, free to tamper with."""
    return Path(shutil.copytree(exported, tmp_path / "bundle"))


def edit_manifest(bundle: Path, *, reseal: bool = True, **changes) -> dict:
    """Change manifest keys; ``reseal`` also rewrites manifest.sha256, as an attacker with write
    access to an unsigned bundle could (only a signature stops that: docs/trust.md)."""
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    data = json.dumps(manifest, indent=2).encode()
    (bundle / "manifest.json").write_bytes(data)
    if reseal:
        (bundle / "manifest.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    return manifest


def export_task(folder: Path, model, calib, **kwargs) -> Path:
    """Export one of tests/exporters/task_models.py's models (ONNX only) with their preprocessing."""
    from exporters import export
    from tests.exporters.task_models import PRE

    return export(model.eval(), calib[:1], folder, calibration=calib, formats=("onnx",), preprocessing=PRE,
                  **kwargs).path


@pytest.fixture(scope="session")
def task_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A detection, a segmentation and an anomaly bundle of the hand-set task models (exported once)."""
    from tests.exporters.task_models import CLASSES, ColorSegmenter, GridDetector, SpotAnomaly, colour_squares, \
        grey_part, to_input

    root = tmp_path_factory.mktemp("task_bundles")
    squares = to_input(np.stack([colour_squares(i, [(i % 4, 2, i % 2)]) for i in range(4)]))
    good = to_input(np.stack([grey_part(i) for i in range(40)]))
    return {"detection": export_task(root / "det", GridDetector(), squares, labels=CLASSES),
            "segmentation": export_task(root / "seg", ColorSegmenter(), squares, labels=["background", *CLASSES]),
            "anomaly": export_task(root / "anomaly", SpotAnomaly(), good, task="anomaly",
                                   postprocess={"target_fpr": 0.05})}
