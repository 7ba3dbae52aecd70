"""The demo's defect segmenter: the U-Net, its scores, a short training, and its export + validation."""
from __future__ import annotations

import numpy as np
import pytest

from exporters.demo.seg_metrics import mask_scores

torch = pytest.importorskip("torch")


def test_mask_scores_by_hand():
    truth = np.zeros((3, 4, 4), np.uint8)
    truth[0, 0, :2] = 2                  # image 0: a 2-pixel defect of class 2 (any class > 0 is a defect)
    truth[1, 3, 3] = 1                   # image 1: a 1-pixel defect, missed
    pred = np.zeros_like(truth)
    pred[0, 0, 1:3] = 1                  # overlaps image 0's defect by one pixel, one pixel off
    pred[2, 1, 1] = 1                    # image 2 is good: a false alarm
    s = mask_scores(pred, truth, np.array(["crack", "pit", "none"]))
    # defect: TP 1, FN 2, FP 2 -> IoU 1/5, Dice 2/6, precision 1/3; background: TN 43, union 47
    assert s["iou"]["defect"] == pytest.approx(0.2) and s["dice"]["defect"] == pytest.approx(1 / 3)
    assert s["iou"]["background"] == pytest.approx(43 / 47)
    assert s["pixel_recall"] == pytest.approx(1 / 3) and s["pixel_precision"] == pytest.approx(1 / 3)
    assert s["image_recall"] == 0.5 and s["false_alarms"] == 1.0
    assert s["defect_images"] == 2 and s["good_images"] == 1
    assert s["per_type"]["crack"]["iou"] == pytest.approx(1 / 3) and s["per_type"]["pit"]["pixel_recall"] == 0.0


def test_unet_shapes_and_sparse_inputs():
    from exporters.demo.models import InspectionUNet

    model = InspectionUNet().eval()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2, 64, 64)
    assert model(torch.zeros(1, 3, 96, 96)).shape == (1, 2, 96, 96)   # fully convolutional
    seen = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen.setdefault(n, a[0]))
             for n in model.sparse_input_layers()]
    model(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert len(seen) == 10 and all(bool((v >= 0).all()) for v in seen.values())  # ReLU outputs only: zeros to skip


def test_shipped_unet_is_small_and_recorded():
    from exporters.demo.models import checkpoint_bytes, load_pretrained, pretrained_info

    assert len(checkpoint_bytes("unet")) < 300_000
    info = pretrained_info("unet")
    metrics = info["metrics"]
    assert metrics["n_test"] == 1000 and metrics["iou"]["defect"] > 0.4 and metrics["image_recall"] > 0.8
    assert info["recipe"] == "fatrelu" and "train_segmenter" in info["command"]
    assert load_pretrained("unet")(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_short_training_learns_something(tmp_path):
    from exporters.demo.dataset import DemoDataConfig
    from exporters.demo.train_segmenter import train_segmenter

    model, metrics = train_segmenter(DemoDataConfig(n_train=48, n_test=16), epochs=1, progress=False,
                                     cache_dir=str(tmp_path))
    assert not model.training and set(metrics["density"]) == set(model.sparse_input_layers())
    assert 0.0 < metrics["mean_density"] < 1.0 and metrics["iou_before_thresholds"] is not None
    assert metrics["defect_images"] == 8 and set(metrics["per_type"]) <= {"scratch", "crack", "pit", "stain"}


def test_segmenter_export_validation_and_figure(tmp_path):
    from types import SimpleNamespace

    from exporters.demo.dataset import DemoDataConfig, make_split
    from exporters.demo.seg_pipeline import MIN_AGREEMENT, run_segmenter

    config = DemoDataConfig(n_train=16, n_test=24)
    data = {"config": config, "train": make_split(config, "train"), "test": make_split(config, "test")}
    settings = SimpleNamespace(out=tmp_path, seg_images=8, runs=3, warmup=1, threads=1, progress=False,
                               calib_samples=16)
    seg = run_segmenter(settings, data)
    manifest = seg.bundle.manifest
    assert manifest["task"] == "segmentation" and manifest["postprocess"]["classes"] == ["background", "defect"]
    assert seg.validation.task == "segmentation" and seg.validation.reference == "torch"
    assert {c.backend for c in seg.validation.task_data} >= {"torch", "edge", "onnxruntime"}
    assert all(a >= MIN_AGREEMENT for a in seg.agreement.values()) and seg.passed
    assert seg.images == 8 and seg.scores["defect_images"] == 4 and seg.scores["good_images"] == 4
    with np.load(tmp_path / "data" / "segmentation_test.npz") as z:
        assert z["x"].shape == (8, 3, 64, 64) and z["masks"].shape == (8, 64, 64)
        assert z["masks"][:4].reshape(4, -1).any(1).all() and not z["masks"][4:].any()  # defect images first
    assert seg.figure is not None and seg.figure.stat().st_size > 1000
    for name in ("segmenter_validation.md", "segmenter_profile.json", "segmenter/model.onnx"):
        assert (tmp_path / name).is_file(), name
    assert {b.backend for b in seg.profile.backends} >= {"edge", "onnxruntime"}
