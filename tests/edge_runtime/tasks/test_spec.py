"""The manifest's task schema: valid specs are typed, tampered or inconsistent ones give one line."""
from __future__ import annotations

import copy

import pytest

from edge_runtime.contract import Manifest
from edge_runtime.errors import BundleError
from edge_runtime.tasks import AnomalySpec, DetectionSpec, SegmentationSpec

SHA = "a" * 64
BASE = {"format_version": 1, "name": "m",
        "files": {"model.onnx": {"sha256": SHA, "bytes": 10}, "golden.npz": {"sha256": SHA, "bytes": 5}}}
YOLO = {"task": "detection", "outputs": [{"name": "out", "shape": ["batch", 6, 84], "dtype": "float32"}],
        "postprocess": {"output": "out", "layout": "yolo", "classes": ["scratch", "pit"],
                        "score_threshold": 0.3, "iou_threshold": 0.5, "max_detections": 20}}
SSD = {"task": "detection", "outputs": [{"name": "boxes", "shape": [1, 100, 4], "dtype": "float32"},
                                        {"name": "scores", "shape": [1, 100, 3], "dtype": "float32"}],
       "postprocess": {"output": "boxes", "scores_output": "scores", "layout": "ssd", "box_format": "xyxy",
                       "coordinates": "normalized", "classes": ["a", "b", "c"]}}
SEG = {"task": "segmentation", "outputs": [{"name": "logits", "shape": ["batch", 3, 64, 64], "dtype": "float32"}],
       "postprocess": {"output": "logits", "format": "logits", "classes": ["bg", "scratch", "stain"],
                       "colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}}
ANOMALY = {"task": "anomaly", "outputs": [{"name": "amap", "shape": ["batch", 1, 16, 16], "dtype": "float32"},
                                          {"name": "score", "shape": ["batch"], "dtype": "float32"}],
           "postprocess": {"map_output": "amap", "score_output": "score", "normalization": {"min": 0.5, "max": 2.5},
                           "threshold": 0.9, "target_fpr": 0.01, "measured_fpr": 0.0, "calibration_images": 40}}


def _doc(task: dict, **post_changes) -> dict:
    doc = copy.deepcopy(BASE) | copy.deepcopy(task)
    doc["postprocess"].update(post_changes)
    return doc


def test_valid_specs_are_typed():
    yolo = Manifest.from_json(_doc(YOLO)).postprocess
    assert isinstance(yolo, DetectionSpec) and yolo.classes == ("scratch", "pit") and yolo.max_detections == 20
    assert yolo.box_format == "cxcywh" and yolo.coordinates == "pixels"
    ssd = Manifest.from_json(_doc(SSD)).postprocess
    assert ssd.scores_output == "scores" and ssd.layout == "ssd"
    seg = Manifest.from_json(_doc(SEG))
    assert seg.task == "segmentation" and isinstance(seg.postprocess, SegmentationSpec)
    assert seg.postprocess.colors[1] == (255, 0, 0) and seg.postprocess.background == 0
    anomaly = Manifest.from_json(_doc(ANOMALY)).postprocess
    assert isinstance(anomaly, AnomalySpec) and anomaly.normalization == (0.5, 2.5) and anomaly.threshold == 0.9
    assert Manifest.from_json(BASE).postprocess is None


@pytest.mark.parametrize("spec", [YOLO, SSD, SEG, ANOMALY])
def test_to_json_round_trips(spec):
    parsed = Manifest.from_json(_doc(spec)).postprocess
    doc = copy.deepcopy(BASE) | {"task": spec["task"], "outputs": spec["outputs"], "postprocess": parsed.to_json()}
    assert Manifest.from_json(doc).postprocess == parsed


@pytest.mark.parametrize("task, changes, needle", [
    (YOLO, {"output": "missing"}, r"postprocess.output='missing' is invalid; expected one of the model's outputs"),
    (YOLO, {"classes": ["a", "b", "c"]}, r"4 \+ classes = 7 on axis 1"),
    (YOLO, {"layout": "yolo_obj"}, r"5 \+ classes = 7 on axis 2"),
    (YOLO, {"layout": "yolov9"}, "postprocess.layout='yolov9'"),
    (YOLO, {"score_threshold": 1.5}, r"postprocess.score_threshold=1.5 is invalid; expected a number in \[0, 1\]"),
    (YOLO, {"iou_threshold": -0.1}, "postprocess.iou_threshold=-0.1"),
    (YOLO, {"score_threshold": float("nan")}, "postprocess.score_threshold=nan"),
    (YOLO, {"max_detections": 10 ** 9}, "postprocess.max_detections=1000000000"),
    (YOLO, {"score_treshold": 0.2}, "postprocess.score_treshold=0.2 is invalid; expected only the keys"),
    (YOLO, {"classes": ["ok", "a\x1b[2J"]}, r"postprocess.classes\[1\]"),
    (SSD, {"scores_output": "boxes"}, r"outputs\['boxes'\].shape=\[1, 100, 4\] is invalid; expected len"),
    (SSD, {"scores_output": None}, "postprocess.scores_output=None"),
    (SSD, {"background": 3}, r"postprocess.background=3 is invalid; expected null or the index .* in \[0, 2\]"),
    (SEG, {"classes": ["bg", "scratch"]}, r"len\(postprocess.classes\) = 2 on axis 1"),
    (SEG, {"format": "probability"}, r"1 channel"),
    (SEG, {"colors": [[0, 0, 0], [300, 0, 0], [0, 0, 0]]}, "postprocess.colors="),
    (SEG, {"background": 5}, "postprocess.background=5"),
    (ANOMALY, {"threshold": 2.0}, "postprocess.threshold=2.0"),
    (ANOMALY, {"normalization": {"min": 3.0, "max": 1.0}}, "min < max"),
    (ANOMALY, {"normalization": {"min": 0.0, "max": float("inf")}}, "postprocess.normalization.max=inf"),
    (ANOMALY, {"score_output": "nothere"}, "postprocess.score_output='nothere'"),
    (ANOMALY, {"map_output": "score"}, "an output of rank 3 or 4"),
    (ANOMALY, {"measured_fpr": 7}, "postprocess.measured_fpr=7"),
])
def test_inconsistent_task_is_one_line(task, changes, needle):
    with pytest.raises(BundleError, match=needle) as info:
        Manifest.from_json(_doc(task, **changes), "b/manifest.json")
    message = str(info.value)
    assert message.startswith("b/manifest.json: ") and "\n" not in message and "Re-export" in message


@pytest.mark.parametrize("doc, needle", [
    (BASE | {"task": "regression"}, "task='regression' is invalid; expected one of"),
    (BASE | {"task": "detection"}, "postprocess=None is invalid"),
    (BASE | {"postprocess": {"output": "x"}}, "null for task 'classification'"),
    (BASE | {"task": "anomaly", "postprocess": {"map_output": "m"}}, "'normalization' and 'threshold'"),
])
def test_missing_or_unknown_task(doc, needle):
    with pytest.raises(BundleError, match=needle):
        Manifest.from_json(doc)


def test_without_outputs_names_are_not_checked():
    doc = _doc(YOLO)
    del doc["outputs"]
    assert Manifest.from_json(doc).postprocess.output == "out"
