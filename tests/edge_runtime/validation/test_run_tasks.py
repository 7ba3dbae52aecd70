"""`run` on detection, segmentation and anomaly bundles: result files, image files, --watch, tampering."""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.validation import commands
from edge_runtime.validation.run import BundleRunner, run_bundle, watch
from tests.edge_runtime.validation.conftest import edit_manifest
from tests.exporters.task_models import CLASSES, PRE, ColorSegmenter, colour_squares, grey_part, to_input


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def _save(folder, name, pixels):
    folder.mkdir(exist_ok=True)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


def test_detection_rows_and_annotated_images(task_bundles, tmp_path):
    images = tmp_path / "in"
    _save(images, "a.png", colour_squares(1, [(0, 3, 0), (2, 1, 1)], size=(64, 64)))  # 2x the input: boxes 16 px
    _save(images, "empty.png", colour_squares(2, [], size=(64, 64)))
    out, drawn = tmp_path / "boxes.csv", tmp_path / "drawn"
    argv = ["run", str(task_bundles["detection"]), str(images), "--out", str(out), "--annotated", str(drawn)]
    assert _cli(argv) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "class", "score", "x1", "y1", "x2", "y2", "latency_ms", "annotated", "error"]
    boxes = sorted((r["class"], [float(r[k]) for k in ("x1", "y1", "x2", "y2")])
                   for r in rows if r["path"].endswith("a.png"))
    assert boxes == [("green", [16.0, 32.0, 32.0, 48.0]), ("red", [48.0, 0.0, 64.0, 16.0])]
    assert [r["class"] for r in rows if r["path"].endswith("empty.png")] == [""]  # processed, nothing found
    picture = np.asarray(Image.open(drawn / "a.png"))
    assert picture.shape == (64, 64, 3) and (picture[32, 16:32] != [0, 255, 0]).any(axis=-1).all()  # outline drawn
    assert (picture[40, 24] == [0, 255, 0]).all()  # inside the box: the image itself
    assert rows[0]["annotated"] == str(drawn / "a.png")


def test_segmentation_masks_match_pytorch(task_bundles, tmp_path):
    pixels = colour_squares(3, [(1, 1, 0), (3, 2, 1)], size=(96, 64))  # 3x taller, 2x wider than the input
    images = tmp_path / "in"
    _save(images, "part.png", pixels)
    out, masks = tmp_path / "areas.json", tmp_path / "masks"
    result, = run_bundle(task_bundles["segmentation"], [images], masks=masks)
    with torch.no_grad():
        resized = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BILINEAR))  # as run's preprocessing
        small = ColorSegmenter().eval()(to_input(resized[None]))
    expected = torch.nn.functional.interpolate(small, size=(96, 64), mode="bilinear", align_corners=False).argmax(1)[0]
    mask = np.asarray(Image.open(result.mask))
    assert Image.open(result.mask).mode == "P" and mask.shape == (96, 64)
    assert (mask == expected.numpy()).mean() >= 0.99
    assert result.defect_pixels == int((mask != 0).sum()) and result.defect_percent == pytest.approx(
        100 * (mask != 0).mean(), abs=1e-3)
    assert result.class_pixels["red"] > 0 and result.class_pixels["green"] > 0
    code = _cli(["run", str(task_bundles["segmentation"]), str(images), "--out", str(out),
                 "--masks", str(tmp_path / "m2")])
    assert code == 0
    record, = json.loads(out.read_text())
    assert record["defect_pixels"] == result.defect_pixels and set(record["class_pixels"]) == {"background", *CLASSES}


def test_anomaly_scores_decisions_and_heatmaps(task_bundles, tmp_path):
    images = tmp_path / "in"
    for i in range(5):
        _save(images, f"good_{i}.png", grey_part(500 + i))
        _save(images, f"bad_{i}.png", grey_part(600 + i, spot=True))
    out = tmp_path / "scores.csv"
    code = _cli(["run", str(task_bundles["anomaly"]), str(images), "--out", str(out),
                 "--heatmaps", str(tmp_path / "h")])
    assert code == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert all(rows[f"bad_{i}.png"]["anomalous"] == "True" for i in range(5))
    assert sum(rows[f"good_{i}.png"]["anomalous"] == "True" for i in range(5)) <= 1
    assert all(float(rows[f"bad_{i}.png"]["score"]) > float(rows[f"bad_{i}.png"]["threshold"]) for i in range(5))
    heat = np.asarray(Image.open(rows["bad_0.png"]["heatmap"]))
    assert heat.shape == (32, 32, 3)


def test_watch_works_for_a_task(task_bundles, tmp_path):
    folder = tmp_path / "incoming"
    _save(folder, "x.png", colour_squares(5, [(3, 3, 1)]))
    runner = BundleRunner(task_bundles["detection"], threads=1)
    results = watch(folder, runner, poll_interval=0.05, max_files=1, timeout=30, include_existing=True)
    assert len(results) == 1 and [b.label for b in results[0].boxes] == ["green"]


def test_images_are_never_overwritten_unasked(task_bundles, tmp_path):
    images = tmp_path / "in"
    _save(images, "a.png", colour_squares(1, [(0, 0, 0)]))
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "a.png").write_bytes(b"mine")
    with pytest.raises(InvalidArgumentError, match="already exists; pass --overwrite"):
        _cli(["run", str(task_bundles["segmentation"]), str(images), "--masks", str(masks)])
    assert (masks / "a.png").read_bytes() == b"mine"
    result, = run_bundle(task_bundles["segmentation"], [images], masks=masks)  # the API: that image fails, no loss
    assert "already exists" in result.error and (masks / "a.png").read_bytes() == b"mine"
    assert _cli(["run", str(task_bundles["segmentation"]), str(images), "--masks", str(masks), "--overwrite"]) == 0
    assert Image.open(masks / "a.png").mode == "P"


def test_flag_for_another_task_is_one_line(task_bundles, tmp_path):
    with pytest.raises(InvalidArgumentError, match="--masks is for segmentation bundles.*detection bundle "
                                                   r"\(use --annotated DIR\)"):
        BundleRunner(task_bundles["detection"], masks=tmp_path / "m")
    with pytest.raises(InvalidArgumentError, match="--heatmaps is for anomaly bundles"):
        BundleRunner(task_bundles["segmentation"], heatmaps=tmp_path / "m")


def test_tampered_task_is_refused_at_load(task_bundles, tmp_path):
    import shutil

    bundle = shutil.copytree(task_bundles["detection"], tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit_manifest(bundle, postprocess={**manifest["postprocess"], "output": "logits"})
    with pytest.raises(BundleError, match="postprocess.output='logits' is invalid; expected one of the model's"):
        BundleRunner(bundle)
    edit_manifest(bundle, postprocess={**manifest["postprocess"], "layout": "yolo_obj"})
    with pytest.raises(BundleError, match=r"5 \+ classes = 7 on axis 2"):
        BundleRunner(bundle)
    edit_manifest(bundle, task="segmentation", postprocess=manifest["postprocess"])
    with pytest.raises(BundleError, match="postprocess.layout"):
        BundleRunner(bundle)


def test_yolov8_style_detector_end_to_end(tmp_path):
    """The zoo's YOLOv8n-shaped detector: task inferred at export, `run`'s boxes = decoding PyTorch's output."""
    from edge_runtime.bundle import load_bundle
    from edge_runtime.tasks.detection import decode
    from tests.zoo import YoloDetector

    torch.manual_seed(0)
    model = YoloDetector(width=8, classes=3).eval()
    images = [grey_part(700 + i, spot=True) for i in range(2)]
    calib = to_input(np.stack([np.asarray(Image.fromarray(p).resize((64, 64), Image.BILINEAR)) for p in images]))
    pre = {**PRE, "input_size": [64, 64]}
    from exporters import export

    bundle = export(model, calib[:1], tmp_path / "yolo", calibration=calib, formats=("onnx",), preprocessing=pre,
                    labels=["scratch", "crack", "pit"], postprocess={"score_threshold": 0.5, "iou_threshold": 0.5})
    spec = bundle.spec.postprocess
    assert bundle.spec.task == "detection" and spec.layout == "yolo" and bundle.spec.outputs[0].shape[1:] == (7, 84)
    folder = tmp_path / "in"
    for i, pixels in enumerate(images):
        _save(folder, f"{i}.png", pixels)
    results = run_bundle(tmp_path / "yolo", [folder])
    for result, x in zip(results, calib):
        with torch.no_grad():
            expected = decode({spec.output: model(x[None]).numpy()}, spec, (32, 32), (64, 64))
        assert len(result.boxes) == len(expected) > 0
        np.testing.assert_allclose([[b.x1, b.y1, b.x2, b.y2] for b in result.boxes], expected.boxes, atol=0.02)
        assert [b.label for b in result.boxes] == expected.names(load_bundle(tmp_path / "yolo").labels)
