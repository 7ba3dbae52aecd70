"""export(task=...): the task inferred from output shapes, postprocess completed, anomaly threshold fitted."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from edge_runtime.bundle import load_bundle
from edge_runtime.errors import InvalidArgumentError
from exporters import export
from exporters.commands import add_export_parser
from exporters.tasks import infer_task
from tests.exporters.task_models import (CLASSES, PRE, ColorSegmenter, GridDetector, SpotAnomaly, colour_squares,
                                         grey_part, to_input)


def _export(model, out, calib, **kwargs):
    return export(model.eval(), calib[:1], out, calibration=calib, formats=("onnx",), preprocessing=PRE, **kwargs)


@pytest.mark.parametrize("shapes, task", [
    ([["batch", 10]], "classification"), ([["batch", 84, 2100]], "detection"),
    ([["batch", 3, 64, 64]], "segmentation"), ([["batch", 1, 64, 64]], None), ([["batch", 2100, 85]], None),
    ([["batch", 4, 10], ["batch", 10, 3]], None), ([["batch", "h", 10]], None),
])
def test_infer_task(shapes, task):
    assert infer_task([{"name": f"o{i}", "shape": s} for i, s in enumerate(shapes)]) == task


def test_detector_and_segmenter_are_inferred(tmp_path):
    calib = to_input(np.stack([colour_squares(i, [(i % 4, 1, i % 2)]) for i in range(4)]))
    det = _export(GridDetector(), tmp_path / "det", calib, labels=CLASSES)
    assert det.spec.task == "detection" and det.spec.postprocess.layout == "yolo"
    assert det.spec.postprocess.classes == tuple(CLASSES) and det.spec.postprocess.output == det.spec.outputs[0].name
    seg = _export(ColorSegmenter(), tmp_path / "seg", calib, labels=["bg", *CLASSES])
    assert seg.spec.task == "segmentation" and seg.spec.postprocess.format == "logits"
    assert seg.spec.postprocess.classes == ("bg", "red", "green")
    again = load_bundle(tmp_path / "seg")  # signed digest covers the new keys: a device reads the same spec
    assert again.spec.postprocess == seg.spec.postprocess
    manual = _export(GridDetector(), tmp_path / "det2", calib, task="detection",
                     postprocess={"score_threshold": 0.6, "iou_threshold": 0.3, "classes": CLASSES})
    assert (manual.spec.postprocess.score_threshold, manual.spec.postprocess.iou_threshold) == (0.6, 0.3)


def test_anomaly_threshold_is_fitted_on_good_parts(tmp_path):
    good = to_input(np.stack([grey_part(i) for i in range(60)]))
    with pytest.raises(InvalidArgumentError, match="cannot tell the model's task.*--task"):
        _export(SpotAnomaly(), tmp_path / "a0", good)
    bundle = _export(SpotAnomaly(), tmp_path / "a", good, task="anomaly", postprocess={"target_fpr": 0.05})
    post = bundle.spec.postprocess
    assert bundle.spec.task == "anomaly" and post.score_output == bundle.spec.outputs[1].name
    assert post.calibration_images == 60 and post.target_fpr == 0.05 and post.measured_fpr <= 0.05
    with torch.no_grad():
        scores = SpotAnomaly()(good)[1].numpy()
    low, high = post.normalization
    assert (low, high) == pytest.approx((scores.min(), scores.max()))
    assert np.mean((scores - low) / (high - low) > post.threshold) == pytest.approx(post.measured_fpr)
    with torch.no_grad():
        bad = SpotAnomaly()(to_input(np.stack([grey_part(100 + i, spot=True) for i in range(20)])))[1].numpy()
    assert np.mean((bad - low) / (high - low) > post.threshold) == 1.0
    from edge_runtime.inspect import inspect_path, render

    assert f"task: anomaly (map {post.map_output!r}, threshold" in render(inspect_path(tmp_path / "a"))
    with pytest.raises(InvalidArgumentError, match="no calibration images"):
        export(SpotAnomaly().eval(), good[:1], tmp_path / "a2", formats=("onnx",), task="anomaly")


def test_bad_task_or_postprocess_is_one_line(tmp_path):
    calib = to_input(np.stack([colour_squares(0, [])]))
    with pytest.raises(InvalidArgumentError, match="task='detector'"):
        _export(GridDetector(), tmp_path / "x", calib, task="detector")
    with pytest.raises(Exception, match=r"postprocess.iou_threshold=2.0 is invalid; expected a number in \[0, 1\]"):
        _export(GridDetector(), tmp_path / "y", calib, postprocess={"iou_threshold": 2.0})
    assert not (tmp_path / "y").exists()
    with pytest.raises(InvalidArgumentError, match=r"'score_threshold' \(--score-threshold\) does not apply to "
                                                   r"task 'segmentation' \(inferred from the outputs\)"):
        _export(ColorSegmenter(), tmp_path / "z", calib, postprocess={"score_threshold": 0.3})


def test_cli_task_flags_reach_export(monkeypatch, tmp_path):
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers())
    post = tmp_path / "post.json"
    post.write_text(json.dumps({"max_detections": 5, "iou_threshold": 0.9}))
    args = parser.parse_args(["export", "m", "--input-shape", "1,3,32,32", "--out", str(tmp_path / "o"),
                              "--task", "detection", "--score-threshold", "0.4", "--iou-threshold", "0.5",
                              "--classes", "a,b", "--postprocess", str(post)])
    seen = {}

    def fake_export(model, example, out, **kwargs):
        seen.update(kwargs)
        raise InvalidArgumentError("stop here")

    monkeypatch.setattr("exporters.bundle.export", fake_export)
    monkeypatch.setattr("exporters.spec.load_model", lambda spec: GridDetector())
    with pytest.raises(InvalidArgumentError, match="stop here"):
        args.func(args)
    assert seen["task"] == "detection"
    assert seen["postprocess"] == {"max_detections": 5, "iou_threshold": 0.5, "score_threshold": 0.4,
                                   "classes": ["a", "b"]}
