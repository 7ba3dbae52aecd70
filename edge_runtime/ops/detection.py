"""Detection post-processing: NonMaxSuppression (SSD, YOLO and R-CNN exports of the ONNX Model Zoo).

Per (batch, class): keep boxes scoring above ``score_threshold``, visit them by descending score
(ties: lower box index first) and select a box unless its IoU with an already selected box of that
class exceeds ``iou_threshold``, up to ``max_output_boxes_per_class``. Boxes are
``[y1, x1, y2, x2]`` (any two opposite corners, ``center_point_box=0``) or ``[xc, yc, w, h]``
(``center_point_box=1``). NumPy: one IoU row per selected box.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError
from edge_runtime.ops.registry import register

Array = NDArray[Any]


def _corners(boxes: Array, center: int) -> Array:
    """(N, 4) -> (N, 4) as (y_min, x_min, y_max, x_max) in float64."""
    b = boxes.astype(np.float64)
    if center:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2] / 2, b[:, 3] / 2
        return np.stack([yc - h, xc - w, yc + h, xc + w], axis=1)
    return np.stack([np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
                     np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3])], axis=1)


def _select(c: Array, scores: Array, limit: int, iou_threshold: float, score_threshold: float | None) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    if score_threshold is not None:
        order = order[scores[order] > score_threshold]
    area = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    keep: list[int] = []
    alive = np.ones(order.size, bool)
    for i, box in enumerate(order):
        if not alive[i]:
            continue
        keep.append(int(box))
        if len(keep) == limit:
            break
        rest = order[i + 1:]
        ih = np.clip(np.minimum(c[box, 2], c[rest, 2]) - np.maximum(c[box, 0], c[rest, 0]), 0, None)
        iw = np.clip(np.minimum(c[box, 3], c[rest, 3]) - np.maximum(c[box, 1], c[rest, 1]), 0, None)
        inter = ih * iw
        union = area[box] + area[rest] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        alive[i + 1:] &= ~(iou > iou_threshold)
    return keep


@register("NonMaxSuppression", since_version=10)
def NonMaxSuppression(boxes: Array, scores: Array, max_output_boxes_per_class: Array | None = None,
                      iou_threshold: Array | None = None, score_threshold: Array | None = None, *,
                      center_point_box: int = 0) -> Array:
    """Selected boxes as int64 rows (batch, class, box index), by batch, then class, then score.

    Raises:
        InvalidInputError: boxes is not (B, N, 4) or scores not (B, C, N).
    """
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[::2] != boxes.shape[:2]:
        raise InvalidInputError(f"NonMaxSuppression: boxes {boxes.shape} and scores {scores.shape}; expected "
                                f"(B, N, 4) and (B, C, N). Check the detection head's outputs.")
    limit = 0 if max_output_boxes_per_class is None else int(np.asarray(max_output_boxes_per_class).reshape(-1)[0])
    iou = 0.0 if iou_threshold is None else float(np.asarray(iou_threshold).reshape(-1)[0])
    thr = None if score_threshold is None else float(np.asarray(score_threshold).reshape(-1)[0])
    rows: list[tuple[int, int, int]] = []
    if limit > 0:
        for b in range(boxes.shape[0]):
            c = _corners(boxes[b], center_point_box)
            for k in range(scores.shape[1]):
                rows += [(b, k, i) for i in _select(c, scores[b, k].astype(np.float64), limit, iou, thr)]
    return np.array(rows, np.int64).reshape(-1, 3)
