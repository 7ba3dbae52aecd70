"""`validate` on detection, segmentation and anomaly bundles: agreement with PyTorch, metrics on labelled NPZs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_cli.main import main as edge_cli
from edge_runtime.bundle import load_bundle
from edge_runtime.errors import InvalidArgumentError
from edge_runtime.validation.report import ValidationReport, render_markdown, render_text
from edge_runtime.validation.task_validate import TaskValidator
from edge_runtime.validation.validate import validate_bundle
from tests.edge_runtime.validation.conftest import export_task
from tests.exporters.task_models import ColorSegmenter, GridDetector, SpotAnomaly, colour_squares, grey_part, to_input

BACKENDS = ["edge", "edge-dense", "onnxruntime"]
CELLS = [(i % 4, 2, i % 2) for i in range(6)]  # (row, col, class) of one 8x8 square per image; 0 red, 1 green


def _squares() -> np.ndarray:
    return to_input(np.stack([colour_squares(i, [c]) for i, c in enumerate(CELLS)])).numpy()


def _pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def _spot_mask(seed: int) -> np.ndarray:
    """grey_part(seed, spot=True)'s 4x4 defect as a (32, 32) 0/1 mask (same random draws)."""
    rng = np.random.default_rng(seed)
    rng.normal(0, 12, (32, 32, 3))
    r, c = rng.integers(0, 28, 2)
    mask = np.zeros((32, 32), np.int64)
    mask[r:r + 4, c:c + 4] = 1
    return mask


def test_detection_map_recall_and_same_boxes(task_bundles, tmp_path):
    # every square is a box the grid detector finds exactly; one green box sits between cells (IoU 0.14): missed
    boxes = [[i, k, col * 8, row * 8, col * 8 + 8, row * 8 + 8] for i, (row, col, k) in enumerate(CELLS)]
    np.savez(tmp_path / "det.npz", x=_squares(), boxes=np.array(boxes + [[0, 1, 4, 4, 12, 12]], np.float32))
    report = validate_bundle(task_bundles["detection"], data=tmp_path / "det.npz", backends=BACKENDS, progress=False)
    assert report.passed, report.failures
    assert report.task == "detection" and report.reference == "onnxruntime"
    assert [a.agreement for a in report.task_golden] == [100.0] * 3  # golden.npz: PyTorch's boxes, decoded
    for check in report.task_data:
        # red: 3 of 3 found, AP 1; green: 3 of 4 found first, AP 3/4; mAP 7/8; recall 6 of 7 boxes
        assert check.per_class == {"red": {"AP": 100.0}, "green": {"AP": 75.0}}
        assert check.metrics == pytest.approx({"map50": 87.5, "recall": 600 / 7})
        assert check.agreement == 100.0 and check.drop == 0.0
    doc = report.to_dict()
    assert doc["task"] == "detection" and doc["task_data"][0]["metrics"]["map50"] == 87.5
    assert "| edge | 87.50 | 85.71 | +0.00 | 100.0 |" in render_markdown(report)
    assert "mAP@0.5 87.50% (drop +0.00 pts vs onnxruntime)" in render_text(report)


def test_segmentation_iou_dice_per_class(task_bundles, tmp_path):
    masks = np.zeros((6, 16, 16), np.int64)  # at the model's output size: no resizing, exact counts
    for i, (row, col, k) in enumerate(CELLS):
        masks[i, row * 4:row * 4 + 4, col * 4:col * 4 + 4] = k + 1
    masks[0, 12:14, 0:2] = 2  # 4 green pixels on dark background: the model cannot see them
    np.savez(tmp_path / "seg.npz", x=_squares(), masks=masks.astype(np.uint8))
    report = validate_bundle(task_bundles["segmentation"], data=tmp_path / "seg.npz", backends=BACKENDS,
                             progress=False)
    assert report.passed, report.failures
    # background: 1436 right, 4 predicted where truth is green; red 48 of 48; green 48 of 52
    iou = {"background": 1436 / 1440, "red": 1.0, "green": 48 / 52}
    dice = {"background": 2872 / 2876, "red": 1.0, "green": 96 / 100}
    for check in report.task_data:
        assert list(check.per_class) == list(iou) and all(set(v) == {"IoU", "Dice"} for v in check.per_class.values())
        for metric, values in (("IoU", iou), ("Dice", dice)):
            assert {k: v[metric] for k, v in check.per_class.items()} == pytest.approx({k: 100 * v
                                                                                      for k, v in values.items()})
        assert check.metrics == pytest.approx({"miou": 100 * np.mean(list(iou.values())),
                                               "mdice": 100 * np.mean(list(dice.values())),
                                               "pixel_accuracy": 100 * 1532 / 1536})
        assert check.agreement == 100.0
    assert [a.agreement for a in report.task_golden] == [100.0] * 3
    assert "| edge | background IoU | " not in render_markdown(report)  # header names classes, rows backends
    assert "| backend | background IoU | background Dice | red IoU |" in render_markdown(report)


def test_anomaly_auroc_fpr_against_pytorch(task_bundles, tmp_path):
    good = [grey_part(800 + i) for i in range(12)]
    bad = [grey_part(900 + i, spot=True) for i in range(6)]
    x = to_input(np.stack(good + bad))
    y = np.array([0] * 12 + [1] * 6)
    masks = np.stack([np.zeros((32, 32), np.int64)] * 12 + [_spot_mask(900 + i) for i in range(6)])
    np.savez(tmp_path / "anomaly.npz", x=x.numpy(), y=y, masks=masks.astype(bool))
    out = tmp_path / "report.json"
    code = edge_cli(["validate", str(task_bundles["anomaly"]), "--data", str(tmp_path / "anomaly.npz"),
                     "--backends", ",".join(BACKENDS), "--json", str(out), "--no-progress"])
    assert code == 0
    doc = json.loads(out.read_text())
    spec = load_bundle(task_bundles["anomaly"]).spec.postprocess
    with torch.no_grad():
        amap, score = SpotAnomaly()(x)
        pixels = torch.nn.functional.interpolate(amap, size=(32, 32), mode="bilinear", align_corners=False)
    flagged = (score.numpy() - spec.normalization[0]) / (spec.normalization[1] - spec.normalization[0]) > spec.threshold
    expected = {"image_auroc": 100 * _pairwise_auroc(y, score.numpy()), "recall": 100 * flagged[y == 1].mean(),
                "pixel_auroc": 100 * _pairwise_auroc(masks.reshape(-1), pixels.numpy().reshape(-1)),
                "fpr": 100 * flagged[y == 0].mean()}
    assert expected["image_auroc"] == 100.0 and 90 < expected["pixel_auroc"] < 100  # the case is not trivial
    for check in doc["task_data"]:
        assert check["metrics"] == pytest.approx(expected, abs=1e-3)
        assert check["agreement"] == 100.0 and check["max_score_diff"] < 1e-4 and check["per_class"] == {}
    # golden.npz holds calibration images; fit_threshold keeps every one of them off the threshold line, so a
    # 1e-7 difference between backends flips no decision
    assert all(a["agreement"] == 100.0 and a["max_score_diff"] < 1e-4 for a in doc["task_golden"])


def test_agreement_counts_disagreements_and_non_finite_outputs(task_bundles):
    """The agreement definitions on hand-altered outputs: a lost box, flipped pixels, a NaN image."""
    validator = TaskValidator(load_bundle(task_bundles["detection"]), (3, 32, 32), 1.0)
    with torch.no_grad():
        ref = GridDetector()(torch.from_numpy(_squares())).numpy()  # (6, 6, 16): one box per image
    lost = ref.copy()
    lost[0, 4:] = 0.0  # image 0 loses its box
    lost[1, 4, 0] = 0.99  # image 1 gains one
    check, = validator.golden([ref], {"altered": [lost]})
    assert check.agreement == pytest.approx(100 * 5 / 7)  # 5 matched; max(1, 0) + max(1, 2) + 4 = 7 compared
    seg = TaskValidator(load_bundle(task_bundles["segmentation"]), (3, 32, 32), 1.0)
    with torch.no_grad():
        logits = ColorSegmenter()(torch.from_numpy(_squares())).numpy()  # (6, 3, 16, 16)
    flipped = logits.copy()
    flipped[0, 1] = 99.0  # image 0 all red: its pixels that PyTorch did not call red change
    flipped[5, 0, 0, 0] = np.nan  # image 5: none of its 1024 pixels counts as agreeing
    check, = seg.golden([logits], {"altered": [flipped]})
    up = torch.nn.functional.interpolate(torch.from_numpy(logits[:1]), size=(32, 32), mode="bilinear",
                                         align_corners=False).argmax(1)
    changed = int((up != 1).sum())
    assert 1024 - 100 < changed < 1024 - 64  # the 8 x 8 red square, grown by the bilinear upsampling
    assert check.agreement == pytest.approx(100 * (1 - (changed + 1024) / (6 * 1024)))


@pytest.mark.parametrize("task, arrays, message", [
    ("detection", {}, r"lacks \['boxes'\]; expected x \(N, ...\) and boxes \(M, 6\) = image_index, class"),
    ("detection", {"boxes": np.zeros((3, 4))}, r"boxes has dtype float64 and shape \(3, 4\); expected a numeric "
                                               r"\(M, 6\) array"),
    ("detection", {"boxes": np.array([np.zeros((1, 5)), np.zeros((2, 5))], dtype=object)}, "boxes.* has dtype object .*need pickle"),
    ("detection", {"boxes": np.array([[9, 0, 0, 0, 4, 4]])}, r"image index\) ranges 9..9; expected rows of x, 0..1"),
    ("detection", {"boxes": np.array([[0, 2, 0, 0, 4, 4]])}, r"holds classes 2..2; expected 0..1 \(the model's 2"),
    ("detection", {"boxes": np.array([[0, 1, 5, 0, 4, 4]])}, r"x2 < x1 or y2 < y1; expected corners"),
    ("detection", {"boxes": np.zeros((0, 6)), "x": np.zeros((2, 32, 32, 3))},
     r"x has dtype float64 and shape \(2, 32, 32, 3\); expected float inputs \(N, 3, 32, 32\)"),
    ("segmentation", {"masks": np.zeros((2, 1, 16, 16), int)}, r"masks has shape \(2, 1, 16, 16\); expected "
                                                               r"\(2, H, W\).*masks\[:, 0\]"),
    ("segmentation", {"masks": np.full((2, 16, 16), 0.5)}, r"masks has dtype float64; expected integer class"),
    ("segmentation", {"masks": np.full((2, 16, 16), 3)}, r"masks holds classes 3..3; expected 0..1"),
    ("anomaly", {"y": np.array([0, 2])}, r"y holds \[0, 2\]; expected 0 \(good\) and 1 \(defect\) only"),
    ("anomaly", {"y": np.array([0, 1]), "masks": np.ones((2, 8, 8), int)},
     r"image 0 is labelled good \(y=0\) but its mask has defect pixels"),
])
def test_malformed_labelled_data_is_one_line(tmp_path, task, arrays, message):
    from edge_runtime.validation.task_data import load_task_data

    np.savez(tmp_path / "d.npz", **({"x": np.zeros((2, 3, 32, 32), np.float32)} | arrays))
    with pytest.raises(InvalidArgumentError, match=message) as info:
        load_task_data(tmp_path / "d.npz", task, (3, 32, 32), 2)
    assert "\n" not in str(info.value)


def test_cli_refuses_bad_data_folders_for_tasks(task_bundles, tmp_path, capsys):
    np.savez(tmp_path / "bad.npz", x=_squares(), boxes=np.zeros((2, 5)))
    bundle = str(task_bundles["detection"])
    assert edge_cli(["validate", bundle, "--data", str(tmp_path / "bad.npz"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: edge-runtime validate: --data") and "(M, 6)" in err and "\n" not in err
    assert edge_cli(["validate", bundle, "--data", str(tmp_path), "--no-progress"]) == 2
    assert "is a directory; a detection bundle is validated with an NPZ" in capsys.readouterr().err


def test_corruptions_report_the_task_metric_per_backend(task_bundles, tmp_path):
    masks = np.zeros((6, 16, 16), np.int64)
    for i, (row, col, k) in enumerate(CELLS):
        masks[i, row * 4:row * 4 + 4, col * 4:col * 4 + 4] = k + 1
    np.savez(tmp_path / "seg.npz", x=_squares(), masks=masks.astype(np.uint8))
    report = validate_bundle(task_bundles["segmentation"], data=tmp_path / "seg.npz", backends=BACKENDS,
                             perturb=("blur", "jpeg"), progress=False)
    rows = {(p.perturbation, p.severity): p.accuracy for p in report.perturbation}
    assert report.perturb_basis == "mean IoU (%) on the labelled data" and len(rows) == 1 + 2 * 3
    clean = next(c.metrics["miou"] for c in report.task_data if c.backend == "edge")
    assert rows[("none", 0)]["edge"] == pytest.approx(clean) and set(rows[("none", 0)]) == set(BACKENDS)
    assert rows[("blur", 3)]["edge"] < 90.0 and rows[("jpeg", 3)]["edge"] < clean  # 2 px blur on 8 px squares
    assert rows[("jpeg", 3)]["edge"] == pytest.approx(rows[("jpeg", 3)]["onnxruntime"])
    assert "## Results under input corruptions (mean IoU (%) on the labelled data)" in render_markdown(report)
    golden_only = validate_bundle(task_bundles["detection"], backends=["edge"], perturb=("blur",), progress=False)
    assert golden_only.perturb_basis == "same boxes (%) as PyTorch on the clean golden.npz inputs"
    assert golden_only.perturbation[0].accuracy == {"edge": 100.0}


def test_metric_drop_against_the_reference_fails(tmp_path):
    class GreenBlind(ColorSegmenter):
        def __init__(self) -> None:
            super().__init__()
            with torch.no_grad():
                self.head.bias[2] = -10.0  # never predicts green

    calib = to_input(np.stack([colour_squares(i, [c]) for i, c in enumerate(CELLS[:2])]))
    bundle = export_task(tmp_path / "blind", GreenBlind(), calib, labels=["background", "red", "green"])
    masks = np.zeros((6, 16, 16), np.int64)
    for i, (row, col, k) in enumerate(CELLS):
        masks[i, row * 4:row * 4 + 4, col * 4:col * 4 + 4] = k + 1
    np.savez(tmp_path / "seg.npz", x=_squares(), masks=masks)
    report = validate_bundle(bundle, data=tmp_path / "seg.npz", backends=["edge"], progress=False,
                             torch_model=ColorSegmenter().eval())
    assert not report.passed and report.reference == "torch"
    edge = next(c for c in report.task_data if c.backend == "edge")
    assert edge.metrics["miou"] < 70 and edge.drop > 30 and not edge.passed
    assert any(f.startswith("edge: mean IoU") and "points below the reference torch" in f for f in report.failures)
    assert any(f.startswith("torch: max abs diff") for f in report.failures)  # not the exported model


def test_classification_report_json_has_no_task_keys():
    doc = ValidationReport(bundle="b", model="m", passed=True).to_dict()
    assert not {"task", "task_golden", "task_data"} & set(doc)


def test_non_finite_outputs_fail_closed_in_the_metrics(task_bundles):
    """A NaN score counts as the wrong decision and the worst rank, with a warning naming the image."""
    from edge_runtime.validation.task_data import TaskData

    validator = TaskValidator(load_bundle(task_bundles["anomaly"]), (3, 32, 32), 1.0)
    x = to_input(np.stack([grey_part(800), grey_part(801), grey_part(900, spot=True), grey_part(901, spot=True)]))
    with torch.no_grad():
        amap, score = (t.numpy() for t in SpotAnomaly()(x))
    broken = score.copy()
    broken[3] = np.nan  # a defective part whose score is NaN: missed, ranked below every good part
    data = TaskData(x.numpy(), "4 parts", y=np.array([0, 0, 1, 1]))
    checks, warnings = validator.labelled(data, {"ref": [amap, score], "nan": [amap, broken]}, "ref")
    ref, nan = checks
    assert ref.metrics["image_auroc"] == 100.0 and ref.metrics["recall"] == 100.0
    assert nan.metrics["image_auroc"] == 50.0 and nan.metrics["recall"] == 50.0 and nan.drop == 50.0
    assert not nan.passed and nan.agreement == 75.0 and nan.max_score_diff == np.inf
    assert warnings == ["nan: 1 image(s) gave non-finite (NaN/inf) outputs, e.g. ['#3']; counted as wrong."]


def test_int8_segmenter_is_compared_with_onnxruntime_int8(tmp_path):
    """An int8 bundle's int8 backends: agreement against golden.int8.npz, metrics beside the fp32 backends."""
    bundle = export_task(tmp_path / "seg8", ColorSegmenter(), torch.from_numpy(_squares()),
                         labels=["background", "red", "green"], quantize="int8")
    masks = np.zeros((6, 16, 16), np.int64)
    for i, (row, col, k) in enumerate(CELLS):
        masks[i, row * 4:row * 4 + 4, col * 4:col * 4 + 4] = k + 1
    np.savez(tmp_path / "seg.npz", x=_squares(), masks=masks)
    report = validate_bundle(bundle, data=tmp_path / "seg.npz", backends=["onnxruntime", "edge-int8"],
                             progress=False)
    assert report.passed, report.failures
    assert [(a.backend, a.reference) for a in report.task_golden] == \
        [("onnxruntime", "PyTorch"), ("edge-int8", "onnxruntime int8")]
    # int8 rounding may flip a pixel where two upsampled logits nearly tie (2 of 6144 seen)
    assert report.task_golden[0].agreement == 100.0 and report.task_golden[1].agreement > 99.9
    assert [c.backend for c in report.task_data] == ["onnxruntime", "edge-int8"]
    assert report.task_data[0].metrics["miou"] == 100.0 and report.task_data[1].metrics["miou"] > 99.0
