"""How well a defect mask matches the truth: IoU, Dice, defect recall and false alarms (numpy only).

Masks are ``(N, H, W)`` class indices; any class but 0 is a defect (the demo's truth has one
class per defect type, its segmenter predicts background/defect), so the scores are those of
the two classes *background* and *defect*:

- IoU and Dice per class, from the pixel confusion matrix
  (:func:`edge_runtime.tasks.metrics.iou_dice`, what ``validate`` reports);
- **pixel recall**: true defect pixels predicted as defect / all true defect pixels;
- **image recall** (the demo's *defect recall*): defect images whose predicted mask overlaps
  the true defect by at least one pixel / all defect images (the defect was found where it is);
- **false alarms**: good images with any predicted defect pixel / all good images;
- per defect type (``types``): the defect IoU and pixel recall over that type's images.

Example:
    >>> truth = np.array([[[0, 1], [0, 0]], [[0, 0], [0, 0]]])
    >>> pred = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    >>> s = mask_scores(pred, truth)
    >>> s["iou"]["defect"], s["pixel_recall"], s["image_recall"], s["false_alarms"]
    (0.5, 1.0, 1.0, 0.0)
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.tasks.metrics import confusion_matrix, iou_dice

CLASSES = ("background", "defect")


def _fraction(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _binary(masks: NDArray[Any]) -> NDArray[np.int64]:
    return (np.asarray(masks) > 0).astype(np.int64)


def mask_scores(pred: NDArray[Any], truth: NDArray[Any], types: NDArray[Any] | None = None) -> dict[str, Any]:
    """Scores of predicted masks against the truth (fractions in [0, 1]; None where undefined).

    Args:
        pred: (N, H, W) predicted class per pixel (> 0: defect).
        truth: (N, H, W) true class per pixel (> 0: defect), same shape.
        types: optional (N,) defect type per image ("none" for good images), for ``per_type``.

    Returns:
        ``{"iou": {class: v}, "dice": {class: v}, "pixel_recall", "pixel_precision",
        "image_recall", "false_alarms", "defect_images", "good_images", "per_type":
        {type: {"iou", "pixel_recall", "images"}}}``.

    Raises:
        InvalidArgumentError: ``pred`` and ``truth`` differ in shape.
    """
    p, t = _binary(pred), _binary(truth)
    confusion = confusion_matrix(t, p, 2)
    iou, dice = iou_dice(confusion)
    clean = lambda v: None if np.isnan(v) else float(v)  # noqa: E731
    has_truth = t.reshape(len(t), -1).any(1)
    found = (p & t).reshape(len(t), -1).any(1)
    alarm = p.reshape(len(p), -1).any(1)
    scores: dict[str, Any] = {
        "iou": {c: clean(iou[k]) for k, c in enumerate(CLASSES)},
        "dice": {c: clean(dice[k]) for k, c in enumerate(CLASSES)},
        "pixel_recall": _fraction(confusion[1, 1], confusion[1].sum()),
        "pixel_precision": _fraction(confusion[1, 1], confusion[:, 1].sum()),
        "image_recall": _fraction(found[has_truth].sum(), has_truth.sum()),
        "false_alarms": _fraction(alarm[~has_truth].sum(), (~has_truth).sum()),
        "defect_images": int(has_truth.sum()), "good_images": int((~has_truth).sum()),
    }
    if types is not None:
        types = np.asarray(types)
        scores["per_type"] = {}
        for kind in sorted(set(types.tolist()) - {"none"}):
            sel = types == kind
            conf = confusion_matrix(t[sel], p[sel], 2)
            scores["per_type"][kind] = {"iou": clean(iou_dice(conf)[0][1]),
                                        "pixel_recall": _fraction(conf[1, 1], conf[1].sum()),
                                        "images": int(sel.sum())}
    return scores
