"""Labelled data of detection, segmentation and anomaly bundles: one NPZ file, checked key by key.

Every file holds ``x``: the inputs, already preprocessed as the manifest says (N, C, H, W)
or (N, H, W, C), float. Then, per task (docs/validation.md):

- detection: ``boxes`` (M, 6), one row per ground-truth box: image index (row of ``x``),
  class index, x1, y1, x2, y2 in pixels of the model input;
- segmentation: ``masks`` (N, H, W) integer class indices (any H, W: predictions are
  resized to the masks);
- anomaly: ``y`` (N,) 0 = good, 1 = defect, and optionally ``masks`` (N, H, W) 0/1 defect
  pixels (all 0 on good images) for the pixel AUROC.

The file is read without pickles (no object arrays); each problem is one
:class:`~edge_runtime.errors.InvalidArgumentError` naming the key, what it holds, what was
expected and how to fix it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.npz import data_limit_bytes, read_npz

#: The keys each task's NPZ holds (optional ones in brackets), for messages.
LAYOUTS = {"detection": "x (N, ...) and boxes (M, 6) = image_index, class, x1, y1, x2, y2 in model-input pixels",
           "segmentation": "x (N, ...) and masks (N, H, W) integer class indices",
           "anomaly": "x (N, ...), y (N,) 0 good / 1 defect and optionally masks (N, H, W) 0/1"}
_DOCS = "(see docs/validation.md, 'Labelled data per task')"


@dataclass(frozen=True)
class TaskData:
    """Inputs and ground truth of a detection, segmentation or anomaly bundle.

    Example:
        >>> data = TaskData(np.zeros((2, 3, 8, 8), np.float32), "2 images", y=np.array([0, 1]))
        >>> len(data)
        2
    """

    x: NDArray[np.float32]                   # (N, ...) preprocessed inputs
    source: str                              # human description for reports
    boxes: NDArray[np.float64] | None = None  # detection: (M, 6) image, class, x1, y1, x2, y2
    masks: NDArray[np.int64] | None = None   # segmentation: class per pixel; anomaly: 0/1 (N, H, W)
    y: NDArray[np.int64] | None = None       # anomaly: (N,) 0 good, 1 defect

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def truth_boxes(self, image: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Ground truth of one image: (boxes (G, 4) x1 y1 x2 y2, classes (G,))."""
        rows = self.boxes[self.boxes[:, 0] == image] if self.boxes is not None else np.zeros((0, 6))
        return rows[:, 2:6], rows[:, 1].astype(np.int64)


def load_task_data(path: str | Path, task: str, input_shape: tuple[int, ...], classes: int | None) -> TaskData:
    """Read and check a task's labelled NPZ.

    Args:
        path: the ``.npz`` file (``--data``).
        task: detection, segmentation or anomaly.
        input_shape: the model's input per sample (golden.npz's ``x.shape[1:]``): ``x`` must match it.
        classes: number of classes (class indices must be below it), None when unknown.

    Returns:
        The :class:`TaskData`.

    Raises:
        InvalidArgumentError: not an NPZ, a missing key, or a key of the wrong shape, dtype or values.
    """
    path = Path(path).expanduser()
    where = f"--data {str(path)!r}"
    if not (path.is_file() and path.suffix == ".npz"):
        kind = "a directory" if path.is_dir() else "not an .npz file"
        raise InvalidArgumentError(f"{where} is {kind}; a {task} bundle is validated with an NPZ holding "
                                   f"{LAYOUTS[task]} {_DOCS}.")
    arrays = read_npz(path, data_limit_bytes(), lambda message: InvalidArgumentError(
        f"--data: {message} Save plain numeric arrays (no pickles), within the memory this device has: "
        f"{LAYOUTS[task]} {_DOCS}."))
    missing = [k for k in ("x", *_REQUIRED[task]) if k not in arrays]
    if missing:
        raise InvalidArgumentError(f"{where} holds {sorted(arrays)} but lacks {missing}; expected "
                                   f"{LAYOUTS[task]} {_DOCS}.")
    x = _inputs(where, arrays["x"], input_shape)
    return _PARSERS[task](where, arrays, x, classes, f"{len(x)} samples from {path}")


def _inputs(where: str, x: NDArray[Any], input_shape: tuple[int, ...]) -> NDArray[np.float32]:
    if x.dtype.kind not in "fiu" or x.ndim < 1 or x.shape[0] == 0 or tuple(x.shape[1:]) != tuple(input_shape):
        raise InvalidArgumentError(f"{where}: x has dtype {x.dtype} and shape {x.shape}; expected float inputs "
                                   f"(N, {', '.join(map(str, input_shape))}), preprocessed as the manifest says "
                                   f"(like golden.npz's x).")
    return np.ascontiguousarray(x, np.float32)


def _integers(where: str, key: str, values: NDArray[Any], expected: str) -> NDArray[np.int64]:
    """Integer or bool arrays, or floats holding whole numbers, as int64."""
    if values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.astype(np.int64)
    if values.dtype.kind not in "biu":
        raise InvalidArgumentError(f"{where}: {key} has dtype {values.dtype}; expected {expected}. Convert it, "
                                   f"e.g. {key}.astype(np.int64).")
    return values.astype(np.int64)


def _class_range(where: str, key: str, values: NDArray[np.int64], classes: int | None) -> None:
    if values.size and (values.min() < 0 or (classes is not None and values.max() >= classes)):
        limit = f"0..{classes - 1} (the model's {classes} classes)" if classes else "indices >= 0"
        raise InvalidArgumentError(f"{where}: {key} holds classes {int(values.min())}..{int(values.max())}; "
                                   f"expected {limit}.")


def _masks(where: str, masks: NDArray[Any], n: int, expected: str) -> NDArray[np.int64]:
    if masks.ndim != 3 or masks.shape[0] != n or 0 in masks.shape:
        raise InvalidArgumentError(f"{where}: masks has shape {masks.shape}; expected ({n}, H, W), one {expected} "
                                   f"mask per row of x (squeeze a channel axis: masks[:, 0]).")
    return _integers(where, "masks", masks, f"integer {expected}")


def _detection(where: str, arrays: dict[str, NDArray[Any]], x: NDArray[np.float32], classes: int | None,
               source: str) -> TaskData:
    boxes = arrays["boxes"]
    if boxes.ndim != 2 or boxes.shape[1] != 6 or boxes.dtype.kind not in "fiu":
        raise InvalidArgumentError(f"{where}: boxes has dtype {boxes.dtype} and shape {boxes.shape}; expected a "
                                   f"numeric (M, 6) array, one row per box: image_index, class, x1, y1, x2, y2 "
                                   f"(np.zeros((0, 6)) when no image has a box) {_DOCS}.")
    boxes = boxes.astype(np.float64)
    if not np.isfinite(boxes).all():
        raise InvalidArgumentError(f"{where}: boxes holds NaN or inf; expected finite coordinates.")
    index = _integers(where, "boxes[:, 0] (image index)", boxes[:, 0], "whole numbers")
    if index.size and (index.min() < 0 or index.max() >= len(x)):
        raise InvalidArgumentError(f"{where}: boxes[:, 0] (image index) ranges {int(index.min())}..{int(index.max())}"
                                   f"; expected rows of x, 0..{len(x) - 1}.")
    _class_range(where, "boxes[:, 1] (class)", _integers(where, "boxes[:, 1] (class)", boxes[:, 1], "whole numbers"),
                 classes)
    flipped = np.flatnonzero((boxes[:, 4] < boxes[:, 2]) | (boxes[:, 5] < boxes[:, 3]))
    if flipped.size:
        raise InvalidArgumentError(f"{where}: box row {int(flipped[0])} is {boxes[flipped[0]].tolist()}, with "
                                   f"x2 < x1 or y2 < y1; expected corners x1, y1, x2, y2 (convert cx, cy, w, h).")
    return TaskData(x, source, boxes=boxes)


def _segmentation(where: str, arrays: dict[str, NDArray[Any]], x: NDArray[np.float32], classes: int | None,
                  source: str) -> TaskData:
    masks = _masks(where, arrays["masks"], len(x), "class-index")
    _class_range(where, "masks", masks, classes)
    return TaskData(x, source, masks=masks)


def _anomaly(where: str, arrays: dict[str, NDArray[Any]], x: NDArray[np.float32], classes: int | None,
             source: str) -> TaskData:
    y = arrays["y"]
    if y.shape != (len(x),):
        raise InvalidArgumentError(f"{where}: y has shape {y.shape}; expected ({len(x)},), one label per row of x.")
    y = _integers(where, "y", y, "0 (good) / 1 (defect) integers")
    if not np.isin(y, (0, 1)).all():
        raise InvalidArgumentError(f"{where}: y holds {sorted(set(y.tolist()))[:10]}; expected 0 (good) and "
                                   f"1 (defect) only.")
    masks = None
    if "masks" in arrays:
        masks = _masks(where, arrays["masks"], len(x), "0/1 defect")
        if not np.isin(masks, (0, 1)).all():
            raise InvalidArgumentError(f"{where}: masks holds values {np.unique(masks)[:10].tolist()}; expected "
                                       f"0 (normal) / 1 (defect) pixels.")
        bad = np.flatnonzero((y == 0) & masks.reshape(len(y), -1).any(1))
        if bad.size:
            raise InvalidArgumentError(f"{where}: image {int(bad[0])} is labelled good (y=0) but its mask has defect "
                                       f"pixels; fix y or clear the mask.")
    return TaskData(x, source, masks=masks, y=y)


_REQUIRED = {"detection": ("boxes",), "segmentation": ("masks",), "anomaly": ("y",)}
_PARSERS = {"detection": _detection, "segmentation": _segmentation, "anomaly": _anomaly}
