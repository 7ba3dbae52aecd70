"""Task metrics against hand-computed small cases, brute-force definitions and, when importable, sklearn."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.tasks.metrics import (auroc, average_precision, average_ranks, box_iou, confusion_matrix,
                                        detection_metrics, iou_dice, match_boxes)


def _dets(rows):
    """[(class, score, x1, y1, x2, y2)] -> (boxes, scores, classes)."""
    rows = np.asarray(rows, np.float64).reshape(-1, 6)
    return rows[:, 2:], rows[:, 1], rows[:, 0].astype(np.int64)


def _truth(rows):
    rows = np.asarray(rows, np.float64).reshape(-1, 5)
    return rows[:, 1:], rows[:, 0].astype(np.int64)


def test_box_iou_by_hand():
    iou = box_iou(np.array([[0, 0, 10, 10], [0, 0, 2, 1]]), np.array([[1, 1, 11, 11], [0, 0, 1, 1], [20, 20, 20, 25]]))
    np.testing.assert_allclose(iou, [[81 / 119, 1 / 100, 0.0], [0.0, 0.5, 0.0]])  # touching edges: 0


def test_matching_needs_iou_at_least_half_same_class_and_an_untaken_box():
    truth = [[0, 0, 2, 1]]
    assert match_boxes([[0, 0, 1, 1]], [0.9], [0], truth, [0]).tolist() == [True]    # IoU exactly 0.5 counts
    assert match_boxes([[0, 0, 1, 0.99]], [0.9], [0], truth, [0]).tolist() == [False]  # just below
    assert match_boxes([[0, 0, 2, 1]], [0.9], [1], truth, [0]).tolist() == [False]     # other class
    # VOC: the second detection's best box is taken, so it is a duplicate even though it overlaps g2 by 0.74
    boxes, classes = [[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0]
    hits = match_boxes([[0.5, 0, 10.5, 10], [0, 0, 10, 10]], [0.8, 0.9], [0, 0], boxes, classes)
    assert hits.tolist() == [False, True]  # visited best score first, whatever the input order


def test_average_precision_all_point_interpolation():
    assert average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(5 / 6)
    assert average_precision([0.0, 0.0], [0.0, 0.0]) == 0.0
    # a precision dip that a later, better point hides: envelope = 1 to recall 0.5, then 0.75
    assert average_precision([0.25, 0.5, 0.5, 0.75], [1.0, 1.0, 2 / 3, 0.75]) == pytest.approx(0.5 + 0.25 * 0.75)


def test_detection_map_and_recall_by_hand():
    truths = [_truth([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]]), _truth([[0, 0, 0, 10, 10]])]
    detections = [_dets([[0, 0.9, 0, 0, 10, 10], [0, 0.8, 1, 1, 11, 11], [1, 0.7, 50, 50, 60, 60]]),
                  _dets([[0, 0.6, 0, 0, 10, 10], [1, 0.95, 20, 20, 30, 30]])]
    # class 0: TP 0.9, duplicate 0.8, TP 0.6 -> AP 5/6; class 1: two false positives -> AP 0
    found = detection_metrics(detections, truths, score_threshold=0.65)
    assert found.ap == pytest.approx({0: 5 / 6, 1: 0.0}) and found.map50 == pytest.approx(5 / 12)
    assert found.recall == pytest.approx(1 / 3) and found.truths == 3 and found.detections == 4
    assert detection_metrics(detections, truths, score_threshold=0.5).recall == pytest.approx(2 / 3)
    perfect = detection_metrics([_dets([[0, 0.9, 0, 0, 10, 10]])], [_truth([[0, 0, 0, 10, 10]])], 0.25)
    assert perfect.map50 == 1.0 and perfect.recall == 1.0


def test_detection_metrics_without_ground_truth_or_detections():
    empty = detection_metrics([_dets([[0, 0.9, 0, 0, 1, 1]])], [_truth([])], 0.25)
    assert empty.map50 is None and empty.recall is None and empty.ap == {}
    missed = detection_metrics([_dets([])], [_truth([[1, 0, 0, 5, 5]])], 0.25)
    assert missed.map50 == 0.0 and missed.recall == 0.0 and missed.ap == {1: 0.0}
    with pytest.raises(InvalidArgumentError, match="2 images of detections but 1"):
        detection_metrics([_dets([]), _dets([])], [_truth([])], 0.25)


def test_segmentation_iou_and_dice_by_hand():
    truth, pred = np.array([[0, 0, 1], [1, 2, 2]]), np.array([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(truth, pred, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou, dice = iou_dice(cm)
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(dice[:3], [1 / 2, 4 / 5, 2 / 3])
    assert np.isnan(iou[3]) and np.isnan(dice[3])  # in neither truth nor prediction: undefined, not 0 or 1
    with pytest.raises(InvalidArgumentError, match="truth has classes 0..2; expected 0..1"):
        confusion_matrix(truth, pred, 2)


def _pairwise_auroc(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def test_auroc_by_hand_with_ties():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert auroc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
    assert auroc([0, 0, 1], [0.2, 0.7, 0.7]) == 0.75
    assert auroc([1, 0], [-np.inf, np.inf]) == 0.0
    assert auroc([0, 0], [0.1, 0.2]) is None  # one class only
    assert average_ranks([3, 1, 3, 3, 2]).tolist() == [4.0, 1.0, 4.0, 4.0, 2.0]
    with pytest.raises(InvalidArgumentError, match="NaN"):
        auroc([0, 1], [0.1, np.nan])


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes many ties
    assert auroc(labels, scores) == pytest.approx(_pairwise_auroc(labels, scores), abs=1e-12)


def test_auroc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 1000)
    scores = np.round(rng.normal(labels, 1.0), 1)
    assert auroc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
