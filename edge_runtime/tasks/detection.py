"""Decode a detector's outputs into boxes in image pixels, then class-wise NMS (numpy).

Layouts (:class:`~edge_runtime.tasks.spec.DetectionSpec`):

- ``yolo``: one output (1, 4 + C, N), rows = 4 box values then C class scores (YOLOv8/v11);
- ``yolo_obj``: one output (1, N, 5 + C), box, objectness, C class scores; a box's class
  score is objectness x class score (YOLOv5/v7);
- ``ssd``: boxes (1, N, 4) and scores (1, N, C).

Each box gets its best class (ultralytics' default, not multi-label; a ``background`` column,
as SSD heads have, is never chosen); boxes scoring above
``score_threshold`` go through NMS per class, with the runtime's NonMaxSuppression op
(:mod:`edge_runtime.ops.detection`, the same selection rule as ONNX's), and the best
``max_detections`` are kept. Boxes in model-input pixels (or fractions of the input size)
are scaled to the image that was resized into the input, and clipped to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError
from edge_runtime.ops.detection import NonMaxSuppression
from edge_runtime.tasks.spec import DetectionSpec


@dataclass(frozen=True)
class Detections:
    """One image's detections, best score first.

    Example:
        >>> d = Detections(np.array([[1, 2, 5, 6]], np.float32), np.array([0.9], np.float32), np.array([1]))
        >>> len(d), d.names(["ok", "scratch"])
        (1, ['scratch'])
    """

    boxes: NDArray[np.float32]   # (K, 4) x1, y1, x2, y2 in image pixels
    scores: NDArray[np.float32]  # (K,)
    classes: NDArray[np.int64]   # (K,) class indices

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def names(self, class_names: Sequence[str]) -> list[str]:
        """Class names (the index as text when ``class_names`` has none for it)."""
        return [class_names[k] if k < len(class_names) else str(k) for k in self.classes.tolist()]


def _one(outputs: Mapping[str, Any], name: str, rank: int) -> NDArray[np.float64]:
    """Output ``name`` of one image: its (1, ...) or (...) array, without the batch axis."""
    if name not in outputs:
        raise InvalidInputError(f"detection: the model has no output {name!r} (outputs: {sorted(outputs)}); "
                                f"fix postprocess.output in the manifest.")
    arr = np.asarray(outputs[name], np.float64)
    if arr.ndim == rank + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != rank:
        raise InvalidInputError(f"detection: output {name!r} has shape {arr.shape}; expected one image's "
                                f"(1, ...) of rank {rank + 1}. Pass the outputs of a single image.")
    return arr


def candidates(outputs: Mapping[str, Any], spec: DetectionSpec) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Every box of one image in xyxy model units, and its class scores.

    Returns:
        (boxes (N, 4) x1 y1 x2 y2 in the model's coordinates, scores (N, C)).

    Raises:
        InvalidInputError: a missing output, or a shape that does not fit the layout.
    """
    if spec.layout == "ssd":
        boxes, scores = _one(outputs, spec.output, 2), _one(outputs, spec.scores_output or "", 2)
        if boxes.shape[1] != 4 or boxes.shape[0] != scores.shape[0]:
            raise InvalidInputError(f"detection (ssd): boxes {boxes.shape} and scores {scores.shape}; expected "
                                    f"(N, 4) and (N, C).")
    else:
        rows = _one(outputs, spec.output, 2)
        rows = rows.T if spec.layout == "yolo" else rows  # (N, 4 + C) / (N, 5 + C)
        first = 4 if spec.layout == "yolo" else 5
        if rows.shape[1] <= first:
            raise InvalidInputError(f"detection ({spec.layout}): output {spec.output!r} has {rows.shape[1]} values "
                                    f"per box; expected {first} + classes. Check postprocess.layout.")
        boxes, scores = rows[:, :4], rows[:, first:]
        if spec.layout == "yolo_obj":
            scores = scores * rows[:, 4:5]
    if spec.box_format == "cxcywh":
        half = boxes[:, 2:4] / 2
        boxes = np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)
    else:
        boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    return boxes, scores


def nms(boxes: NDArray[Any], scores: NDArray[Any], classes: NDArray[Any], iou_threshold: float,
        limit: int) -> NDArray[np.int64]:
    """Class-wise non-maximum suppression.

    Args:
        boxes: (K, 4) corners.
        scores: (K,) scores.
        classes: (K,) class indices; boxes of different classes never suppress each other.
        iou_threshold: a box is dropped when its IoU with a better box of its class exceeds this.
        limit: most boxes kept.

    Returns:
        Indices into ``boxes`` of the kept boxes, best score first (ties: lower index first).
    """
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    present, column = np.unique(classes, return_inverse=True)
    per_class = np.full((1, present.size, len(scores)), -np.inf)  # (1, classes present, K)
    per_class[0, column, np.arange(len(scores))] = scores
    rows = NonMaxSuppression(boxes[None].astype(np.float64), per_class, np.array([limit]),
                             np.array([iou_threshold]), np.array([-np.finfo(np.float64).max]))
    kept = rows[:, 2]
    order = np.lexsort((kept, -scores[kept]))
    return kept[order][:limit]


def decode(outputs: Mapping[str, Any], spec: DetectionSpec, image_size: tuple[int, int],
           input_size: tuple[int, int] | None = None) -> Detections:
    """One image's detections in image pixels.

    Args:
        outputs: output name -> array of one image ((1, ...) or without the batch axis).
        spec: the bundle's detection postprocess.
        image_size: (H, W) of the image the boxes are reported in (the original image).
        input_size: (H, W) of the model input the image was resized to; None when the image
            is the model input. Normalized coordinates need only ``image_size``.

    Returns:
        :class:`Detections`, at most ``spec.max_detections``, best score first.

    Raises:
        InvalidInputError: a missing output or a shape that does not fit ``spec.layout``.

    Example:
        >>> spec = DetectionSpec(output="y", layout="yolo", score_threshold=0.5)
        >>> y = np.array([[[10.], [10.], [4.], [4.], [0.9]]])  # (1, 4 + 1 class, 1 box)
        >>> decode({"y": y}, spec, (40, 40), (20, 20)).boxes.tolist()
        [[16.0, 16.0, 24.0, 24.0]]
    """
    boxes, scores = candidates(outputs, spec)
    if spec.background is not None:
        if spec.background >= scores.shape[1]:
            raise InvalidInputError(f"detection: postprocess.background={spec.background} but the model scores "
                                    f"{scores.shape[1]} classes; fix the manifest.")
        scores = scores.copy()
        scores[:, spec.background] = -np.inf  # "no object" is never a detection
    best = scores.argmax(1) if scores.shape[1] else np.zeros(len(scores), np.int64)
    conf = scores[np.arange(len(scores)), best] if scores.shape[1] else np.zeros(len(scores))
    keep = conf > spec.score_threshold
    boxes, conf, best = boxes[keep], conf[keep], best[keep]
    height, width = image_size
    if spec.coordinates == "normalized":
        scale = np.array([width, height, width, height], np.float64)
    elif input_size is not None:
        scale = np.array([width / input_size[1], height / input_size[0]] * 2, np.float64)
    else:
        scale = np.ones(4)
    boxes = boxes * scale
    chosen = nms(boxes, conf, best, spec.iou_threshold, spec.max_detections)
    boxes = np.clip(boxes[chosen], 0, [width, height, width, height])
    return Detections(boxes.astype(np.float32), conf[chosen].astype(np.float32), best[chosen].astype(np.int64))
