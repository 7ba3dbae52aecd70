"""Quality metrics of detection, segmentation and anomaly results against ground truth (numpy only).

- Detection: mAP@0.5 as Pascal VOC defines it (detections of a class sorted by score; a
  detection is a true positive when its best-overlapping ground-truth box of the same class in
  its image has IoU >= 0.5 and was not matched before; AP = area under the precision envelope,
  all-point interpolation, VOC 2010+), averaged over the classes that have ground truth; and
  recall at the bundle's score threshold (ground-truth boxes matched by a detection scoring
  above it).
- Segmentation: IoU = TP / (TP + FP + FN) and Dice = 2 TP / (2 TP + FP + FN) per class, from
  the pixel confusion matrix over all images (NaN for a class absent from both truth and
  prediction).
- Anomaly: AUROC by ranks (the Mann-Whitney U statistic; tied scores get their average rank,
  so a tie counts half), for image scores and for map pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError

#: IoU a detection needs with a ground-truth box (of its class) to count: mAP@0.5.
IOU_THRESHOLD = 0.5


def box_iou(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float64]:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), corners x1, y1, x2, y2.

    Returns:
        (N, M); 0 where the union is empty.

    Example:
        >>> box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2], [5, 5, 6, 6]])).round(3).tolist()
        [[0.333, 0.0]]
    """
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])    # (N, M, 2)
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)        # (N, M)
    area = lambda boxes: np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(boxes: Any, scores: Any, classes: Any, truth_boxes: Any, truth_classes: Any,
                iou_threshold: float = IOU_THRESHOLD) -> NDArray[np.bool_]:
    """Which detections of one image are true positives (VOC's greedy matching).

    Detections are visited best score first; each takes the ground-truth box of its class it
    overlaps most; it is a true positive when that IoU >= ``iou_threshold`` and the box was not
    taken by a better detection (else a false positive, a duplicate).

    Args:
        boxes, scores, classes: the detections (K, 4), (K,), (K,).
        truth_boxes, truth_classes: the ground truth (G, 4), (G,).
        iou_threshold: the IoU a match needs.

    Returns:
        (K,) bool, in the detections' order.

    Example:
        >>> match_boxes([[0, 0, 2, 2], [0, 0, 2, 2]], [0.9, 0.8], [0, 0], [[0, 0, 2, 2]], [0]).tolist()
        [True, False]
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    hits = np.zeros(scores.size, np.bool_)
    truth_classes = np.asarray(truth_classes).reshape(-1)
    if scores.size == 0 or truth_classes.size == 0:
        return hits
    iou = box_iou(boxes, truth_boxes)
    iou[np.asarray(classes).reshape(-1, 1) != truth_classes[None, :]] = -1.0  # other classes never match
    taken = np.zeros(truth_classes.size, np.bool_)
    for k in np.argsort(-scores, kind="stable"):
        j = int(iou[k].argmax())
        if iou[k, j] >= iou_threshold and not taken[j]:
            hits[k] = taken[j] = True
    return hits


def average_precision(recall: Any, precision: Any) -> float:
    """VOC all-point interpolated AP: area under the monotone envelope of the precision/recall curve.

    Args:
        recall, precision: cumulative values after each detection, best score first.

    Returns:
        AP in [0, 1].

    Example:
        >>> average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3])
        0.8333333333333333
    """
    rec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    pre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    pre = np.maximum.accumulate(pre[::-1])[::-1]         # precision envelope, right to left
    steps = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[steps + 1] - rec[steps]) * pre[steps + 1]))


@dataclass(frozen=True)
class DetectionMetrics:
    """mAP@0.5 and recall of a detector on labelled images (fractions in [0, 1]).

    Example:
        >>> DetectionMetrics(map50=0.5, ap={0: 1.0, 1: 0.0}, recall=0.5, truths=2, detections=3).map50
        0.5
    """

    map50: float | None          # mean AP over classes with ground truth; None without any ground truth
    ap: dict[int, float]         # class index -> AP (classes with ground truth only)
    recall: float | None         # ground-truth boxes found by a detection scoring > the threshold / all
    truths: int                  # ground-truth boxes
    detections: int              # detections scoring > the threshold


def detection_metrics(detections: Sequence[tuple[Any, Any, Any]], truths: Sequence[tuple[Any, Any]],
                      score_threshold: float, iou_threshold: float = IOU_THRESHOLD) -> DetectionMetrics:
    """mAP@``iou_threshold`` over all images, and recall at ``score_threshold``.

    Args:
        detections: per image (boxes (K, 4), scores (K,), classes (K,)); for mAP, decoded with a
            low score threshold so the whole precision/recall curve is seen.
        truths: per image (boxes (G, 4), classes (G,)), same frame as the detections.
        score_threshold: the bundle's threshold; recall counts detections scoring above it.
        iou_threshold: IoU a match needs.

    Returns:
        The :class:`DetectionMetrics`.

    Raises:
        InvalidArgumentError: the two sequences have different lengths.
    """
    if len(detections) != len(truths):
        raise InvalidArgumentError(f"detection metrics: {len(detections)} images of detections but "
                                   f"{len(truths)} of ground truth; pass one entry per image to both.")
    scores, classes, hits = [], [], []
    for (boxes, score, cls), (truth_boxes, truth_classes) in zip(detections, truths):
        scores.append(np.asarray(score, np.float64).reshape(-1))
        classes.append(np.asarray(cls, np.int64).reshape(-1))
        hits.append(match_boxes(boxes, scores[-1], classes[-1], truth_boxes, truth_classes, iou_threshold))
    score, cls, hit = (np.concatenate(v) if v else np.zeros(0) for v in (scores, classes, hits))
    hit = hit.astype(np.bool_)
    truth_cls = np.concatenate([np.asarray(c, np.int64).reshape(-1) for _, c in truths] or [np.zeros(0, np.int64)])
    ap = {}
    for c in np.unique(truth_cls).tolist():
        mine = cls == c
        order = np.argsort(-score[mine], kind="stable")
        tp = np.cumsum(hit[mine][order])
        count = int(np.count_nonzero(truth_cls == c))
        ap[int(c)] = average_precision(tp / count, tp / np.arange(1, tp.size + 1))
    above = score > score_threshold
    recall = float(np.count_nonzero(hit & above)) / truth_cls.size if truth_cls.size else None
    return DetectionMetrics(map50=float(np.mean(list(ap.values()))) if ap else None, ap=ap, recall=recall,
                            truths=int(truth_cls.size), detections=int(np.count_nonzero(above)))


def confusion_matrix(truth: Any, predicted: Any, classes: int) -> NDArray[np.int64]:
    """(classes, classes) pixel counts, rows = true class, columns = predicted class.

    Raises:
        InvalidArgumentError: different shapes, or a class index outside [0, classes).

    Example:
        >>> confusion_matrix([[0, 1], [1, 1]], [[0, 1], [0, 1]], 2).tolist()
        [[1, 0], [1, 2]]
    """
    truth, predicted = np.asarray(truth, np.int64), np.asarray(predicted, np.int64)
    if truth.shape != predicted.shape:
        raise InvalidArgumentError(f"confusion matrix: truth {truth.shape} and prediction {predicted.shape} differ; "
                                   f"pass masks of one size.")
    for what, values in (("truth", truth), ("prediction", predicted)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise InvalidArgumentError(f"confusion matrix: {what} has classes {int(values.min())}..{int(values.max())};"
                                       f" expected 0..{classes - 1}.")
    flat = truth.reshape(-1) * classes + predicted.reshape(-1)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes).astype(np.int64)


def iou_dice(confusion: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-class IoU and Dice from a confusion matrix (NaN where the class is in neither truth nor prediction).

    Example:
        >>> iou, dice = iou_dice(np.array([[1, 0], [1, 2]]))
        >>> iou.round(3).tolist(), dice.round(3).tolist()
        ([0.5, 0.667], [0.667, 0.8])
    """
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    wrong = cm.sum(0) + cm.sum(1) - 2 * tp              # FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + wrong > 0, tp / (tp + wrong), np.nan)
        dice = np.where(tp + wrong > 0, 2 * tp / (2 * tp + wrong), np.nan)
    return iou, dice


def average_ranks(values: Any) -> NDArray[np.float64]:
    """1-based ranks of ``values``, ties sharing their average rank (scipy's ``rankdata``).

    Example:
        >>> average_ranks([0.1, 0.5, 0.5, 0.2]).tolist()
        [1.0, 3.5, 3.5, 2.0]
    """
    values = np.asarray(values, np.float64).reshape(-1)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]]) if values.size else np.zeros(0, np.bool_)
    starts = np.flatnonzero(first)
    ends = np.concatenate([starts[1:], [values.size]])
    ranks = np.empty(values.size, np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def auroc(labels: Any, scores: Any) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting half.

    Args:
        labels: 0 (negative, good) / 1 (positive, defect), any shape.
        scores: same size; higher means more likely positive. +/-inf are fine, NaN is not.

    Returns:
        AUROC in [0, 1], or None when the labels hold only one class.

    Raises:
        InvalidArgumentError: sizes differ, labels other than 0/1, or a NaN score.

    Example:
        >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if labels.size != scores.size or not np.isin(labels, (0, 1)).all() or np.isnan(scores).any():
        raise InvalidArgumentError(f"AUROC: {labels.size} labels and {scores.size} scores (NaN: "
                                   f"{int(np.isnan(scores).sum())}); expected as many 0/1 labels as scores, none NaN.")
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
