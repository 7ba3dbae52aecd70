"""The manifest's ``task`` and ``postprocess`` keys (docs/bundle.md), checked and typed.

A bundle declares what its outputs mean: ``classification`` (the default: class scores,
named by ``labels``), ``detection`` (boxes and class scores, decoded and NMS-ed by
:mod:`edge_runtime.tasks.detection`), ``segmentation`` (per-pixel classes,
:mod:`edge_runtime.tasks.segmentation`) or ``anomaly`` (an anomaly map and an image score,
:mod:`edge_runtime.tasks.anomaly`). :func:`parse_task` is what
:meth:`edge_runtime.contract.Manifest.from_json` calls; every check raises one
:class:`~edge_runtime.errors.BundleError` naming the manifest, the key, the value, what was
expected and the fix, like the rest of the contract. Outputs are checked against the
manifest's ``outputs`` (names, and ranks and sizes where the dims are integers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence, Union

from edge_runtime.errors import BundleError

TASKS = ("classification", "detection", "segmentation", "anomaly")
LAYOUTS = ("yolo", "yolo_obj", "ssd")       # (1, 4+C, N); (1, N, 5+C) with objectness; boxes + scores
BOX_FORMATS = ("cxcywh", "xyxy")
COORDINATES = ("pixels", "normalized")       # model-input pixels, or fractions of the input size
SEG_FORMATS = ("logits", "probability")      # (1, C, H, W) per-class scores; (1, 1, H, W) defect probability
RESIZES = ("bilinear", "nearest")            # how masks/maps go back to the image size
MAX_DETECTIONS = 10_000
MAX_CLASSES, MAX_NAME_CHARS = 100_000, 256
_FIX = "Re-export the bundle (edge-runtime export --task ...) or copy it again from the build machine."


def fail(source: str, key: str, value: Any, expected: str, fix: str = _FIX) -> BundleError:
    """The contract's one-line error: ``SOURCE: KEY=VALUE is invalid; expected ... FIX``."""
    shown = repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return BundleError(f"{source}: {key}={shown} is invalid; expected {expected}. {fix}")


def _fraction(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise fail(source, key, value, "a number in [0, 1]")
    return float(value)


def _number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > 1e30:
        raise fail(source, key, value, "a finite number")
    return float(value)


def _choice(source: str, key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise fail(source, key, value, f"one of {list(choices)}")
    return value


def _names(source: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_CLASSES:
        raise fail(source, key, value, f"a list of at most {MAX_CLASSES} class names")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise fail(source, f"{key}[{i}]", name, f"a printable string of 1 to {MAX_NAME_CHARS} characters "
                                                   f"(no control characters such as ESC, CR or LF)")
    return tuple(value)


@dataclass(frozen=True)
class DetectionSpec:
    """How to decode a detector's outputs.

    ``output`` is the YOLO output, or for ``layout="ssd"`` the boxes (1, N, 4), with
    ``scores_output`` the class scores (1, N, C). Boxes are in model-input pixels (or
    fractions of the input size with ``coordinates="normalized"``).

    Example:
        >>> DetectionSpec(output="out0", layout="yolo").score_threshold
        0.25
    """

    output: str
    layout: str = "yolo"
    box_format: str = "cxcywh"
    coordinates: str = "pixels"
    score_threshold: float = 0.25   # a detection needs score > this (ultralytics' conf default)
    iou_threshold: float = 0.45     # NMS: drop a box overlapping a better one of its class by more
    max_detections: int = 100       # per image, best scores first
    classes: tuple[str, ...] = ()
    scores_output: str | None = None
    background: int | None = None   # a score column that is "no object" (SSD's class 0): never a detection

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        doc = {"output": self.output, "layout": self.layout, "box_format": self.box_format,
               "background": self.background,
               "coordinates": self.coordinates, "score_threshold": self.score_threshold,
               "iou_threshold": self.iou_threshold, "max_detections": self.max_detections,
               "classes": list(self.classes)}
        return doc | ({"scores_output": self.scores_output} if self.scores_output else {})


@dataclass(frozen=True)
class SegmentationSpec:
    """How to turn a segmenter's output into a class mask.

    ``format="logits"``: (1, C, H, W) scores, mask = argmax, ``background`` is the class that
    is not a defect. ``format="probability"``: (1, 1, H, W) defect probability, mask =
    probability > ``threshold`` (classes default to background, defect).

    Example:
        >>> SegmentationSpec(output="mask", format="probability").class_names
        ('background', 'defect')
    """

    output: str
    format: str = "logits"
    threshold: float = 0.5
    classes: tuple[str, ...] = ()
    colors: tuple[tuple[int, int, int], ...] = ()
    background: int | None = 0
    resize: str = "bilinear"

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes, with the probability format's default pair."""
        return self.classes or (("background", "defect") if self.format == "probability" else ())

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        return {"output": self.output, "format": self.format, "threshold": self.threshold,
                "classes": list(self.classes), "colors": [list(c) for c in self.colors],
                "background": self.background, "resize": self.resize}


@dataclass(frozen=True)
class AnomalySpec:
    """An anomaly detector's outputs and its fitted decision rule.

    The image score (``score_output``, or the max of the map when None) is normalised as
    ``(score - min) / (max - min)`` with ``normalization`` fitted on good parts; the part is
    anomalous when the normalised score > ``threshold``. The map is normalised with
    ``map_normalization`` for display.

    Example:
        >>> AnomalySpec(map_output="amap", normalization=(1.0, 3.0), threshold=0.9).threshold
        0.9
    """

    map_output: str
    score_output: str | None = None
    normalization: tuple[float, float] = (0.0, 1.0)   # (min, max) of the raw image score
    threshold: float = 0.5
    target_fpr: float | None = None
    measured_fpr: float | None = None
    calibration_images: int | None = None
    map_normalization: tuple[float, float] | None = None  # (min, max) of map pixels; None: normalization
    resize: str = "bilinear"

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        maps = self.map_normalization
        return {"map_output": self.map_output, "score_output": self.score_output,
                "normalization": {"min": self.normalization[0], "max": self.normalization[1]},
                "map_normalization": None if maps is None else {"min": maps[0], "max": maps[1]},
                "threshold": self.threshold,
                "target_fpr": self.target_fpr, "measured_fpr": self.measured_fpr,
                "calibration_images": self.calibration_images, "resize": self.resize}


TaskSpec = Union[DetectionSpec, SegmentationSpec, AnomalySpec]
#: The postprocess keys each task accepts.
POSTPROCESS_KEYS = {"detection": set(DetectionSpec.__dataclass_fields__),
         "segmentation": set(SegmentationSpec.__dataclass_fields__),
         "anomaly": set(AnomalySpec.__dataclass_fields__)}


def parse_task(source: str, task: Any, post: Any, outputs: Sequence[Any]) -> tuple[str, TaskSpec | None]:
    """Check the manifest's ``task`` and ``postprocess`` against its ``outputs``.

    Args:
        source: the manifest path, for messages.
        task: the ``task`` value (None: classification).
        post: the ``postprocess`` value (a dict; None/absent for classification).
        outputs: the manifest's output specs (``.name``, ``.shape``); empty skips the output checks.

    Returns:
        (task, its spec or None for classification).

    Raises:
        BundleError: an unknown task, a missing/unknown/out-of-range postprocess key, an output
            the model does not have, or a layout that does not fit the output's shape.
    """
    task = "classification" if task is None else task
    if task not in TASKS:
        raise fail(source, "task", task, f"one of {list(TASKS)}",
                   "Fix the manifest, or upgrade edge-runtime on the device to run this task.")
    if task == "classification":
        if post not in (None, {}):
            raise fail(source, "postprocess", post, "null for task 'classification' (set 'task' to detection, "
                                                    "segmentation or anomaly to use a postprocess)")
        return task, None
    if not isinstance(post, dict):
        raise fail(source, "postprocess", post, f"an object describing the {task} outputs (docs/bundle.md)")
    unknown = sorted(set(post) - POSTPROCESS_KEYS[task])
    if unknown:
        raise fail(source, f"postprocess.{unknown[0]}", post[unknown[0]],
                   f"only the keys {sorted(POSTPROCESS_KEYS[task])} for task {task!r}")
    shapes = {o.name: tuple(o.shape) for o in outputs}
    parse = {"detection": _detection, "segmentation": _segmentation, "anomaly": _anomaly}[task]
    return task, parse(source, post, shapes)


def _output(source: str, key: str, value: Any, shapes: dict[str, tuple[Any, ...]],
            ranks: Sequence[int]) -> tuple[str, tuple[Any, ...] | None]:
    """A named output: present in the manifest's outputs, of one of ``ranks``; (name, shape or None)."""
    if not isinstance(value, str) or not value:
        raise fail(source, key, value, "the name of one of the model's outputs")
    if not shapes:
        return value, None
    if value not in shapes:
        raise fail(source, key, value, f"one of the model's outputs {sorted(shapes)}")
    shape = shapes[value]
    if len(shape) not in ranks:
        raise fail(source, key, value, f"an output of rank {' or '.join(map(str, ranks))}, but {value!r} "
                                       f"has shape {list(shape)}")
    return value, shape


def _dim(shape: tuple[Any, ...] | None, axis: int) -> int | None:
    """The integer size of ``axis``, or None (unknown, symbolic)."""
    if shape is None:
        return None
    value = shape[axis]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _check_size(source: str, key: str, shape: tuple[Any, ...] | None, axis: int, expected: int,
                what: str) -> None:
    size = _dim(shape, axis)
    if size is not None and size != expected:
        raise fail(source, key, list(shape or ()), f"{what} = {expected} on axis {axis}")


def _detection(source: str, post: dict[str, Any], shapes: dict[str, tuple[Any, ...]]) -> DetectionSpec:
    p = "postprocess."
    layout = _choice(source, p + "layout", post.get("layout", "yolo"), LAYOUTS)
    output, shape = _output(source, p + "output", post.get("output"), shapes, (3,))
    classes = _names(source, p + "classes", post.get("classes"))
    scores_output = None
    if layout == "ssd":
        scores_output, scores = _output(source, p + "scores_output", post.get("scores_output"), shapes, (3,))
        _check_size(source, f"outputs[{output!r}].shape", shape, 2, 4, "4 box coordinates")
        if classes:
            _check_size(source, f"outputs[{scores_output!r}].shape", scores, 2, len(classes),
                        f"len(postprocess.classes)")
        boxes_n, scores_n = _dim(shape, 1), _dim(scores, 1)
        if boxes_n and scores_n and boxes_n != scores_n:
            raise fail(source, p + "scores_output", scores_output,
                       f"as many rows as the boxes output ({boxes_n}), but it has {scores_n}")
    elif post.get("scores_output") is not None:
        raise fail(source, p + "scores_output", post["scores_output"], "null unless layout is 'ssd'")
    elif layout == "yolo" and classes:
        _check_size(source, f"outputs[{output!r}].shape", shape, 1, 4 + len(classes), "4 + classes")
    elif classes:
        _check_size(source, f"outputs[{output!r}].shape", shape, 2, 5 + len(classes), "5 + classes")
    background = post.get("background")
    if background is not None and (isinstance(background, bool) or not isinstance(background, int)
                                   or not 0 <= background < (len(classes) or MAX_CLASSES)):
        raise fail(source, p + "background", background, "null or the index of the background score column"
                                                           + (f" in [0, {len(classes) - 1}]" if classes else ""))
    limit = post.get("max_detections", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DETECTIONS:
        raise fail(source, p + "max_detections", limit, f"an integer in [1, {MAX_DETECTIONS}]")
    return DetectionSpec(
        output=output, layout=layout, classes=classes, scores_output=scores_output, max_detections=limit,
        background=background,
        box_format=_choice(source, p + "box_format", post.get("box_format", "cxcywh"), BOX_FORMATS),
        coordinates=_choice(source, p + "coordinates", post.get("coordinates", "pixels"), COORDINATES),
        score_threshold=_fraction(source, p + "score_threshold", post.get("score_threshold", 0.25)),
        iou_threshold=_fraction(source, p + "iou_threshold", post.get("iou_threshold", 0.45)))


def _segmentation(source: str, post: dict[str, Any], shapes: dict[str, tuple[Any, ...]]) -> SegmentationSpec:
    p = "postprocess."
    fmt = _choice(source, p + "format", post.get("format", "logits"), SEG_FORMATS)
    output, shape = _output(source, p + "output", post.get("output"), shapes, (4,) if fmt == "logits" else (3, 4))
    classes = _names(source, p + "classes", post.get("classes"))
    if fmt == "probability":
        if shape is not None and len(shape) == 4:
            _check_size(source, f"outputs[{output!r}].shape", shape, 1, 1, "1 channel (a probability map)")
        if classes and len(classes) != 2:
            raise fail(source, p + "classes", list(classes), "2 names (background, defect) for format 'probability'")
    elif classes:
        _check_size(source, f"outputs[{output!r}].shape", shape, 1, len(classes), "len(postprocess.classes)")
    count = len(classes) or (2 if fmt == "probability" else _dim(shape, 1)) or 0
    colors = post.get("colors") or []
    if not isinstance(colors, list) or (colors and count and len(colors) != count) or any(
            not isinstance(c, list) or len(c) != 3 or any(isinstance(v, bool) or not isinstance(v, int)
                                                          or not 0 <= v <= 255 for v in c) for c in colors):
        raise fail(source, p + "colors", colors, f"one [r, g, b] (integers 0..255) per class ({count or 'C'})")
    background = post.get("background", 0)
    if background is not None and (isinstance(background, bool) or not isinstance(background, int)
                                   or not 0 <= background < max(count, 1)):
        raise fail(source, p + "background", background, f"null or a class index in [0, {max(count, 1) - 1}]")
    return SegmentationSpec(
        output=output, format=fmt, classes=classes, colors=tuple(tuple(c) for c in colors),
        background=background, threshold=_fraction(source, p + "threshold", post.get("threshold", 0.5)),
        resize=_choice(source, p + "resize", post.get("resize", "bilinear"), RESIZES))


def _range(source: str, key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, dict) or set(value) != {"min", "max"}:
        raise fail(source, key, value, '{"min": number, "max": number} with min < max')
    lo, hi = _number(source, key + ".min", value["min"]), _number(source, key + ".max", value["max"])
    if not lo < hi:
        raise fail(source, key, value, "min < max (fitted on good parts at export)")
    return lo, hi


def _anomaly(source: str, post: dict[str, Any], shapes: dict[str, tuple[Any, ...]]) -> AnomalySpec:
    p = "postprocess."
    map_output, shape = _output(source, p + "map_output", post.get("map_output"), shapes, (3, 4))
    if shape is not None and len(shape) == 4:
        _check_size(source, f"outputs[{map_output!r}].shape", shape, 1, 1, "1 channel (an anomaly map)")
    score_output = post.get("score_output")
    if score_output is not None:
        score_output, score_shape = _output(source, p + "score_output", score_output, shapes, (1, 2))
        if score_shape is not None and len(score_shape) == 2:
            _check_size(source, f"outputs[{score_output!r}].shape", score_shape, 1, 1, "one score per image")
    if "normalization" not in post or "threshold" not in post:
        raise fail(source, "postprocess", sorted(post), "'normalization' and 'threshold' (fitted on good parts "
                                                        "by edge-runtime export --task anomaly --calib DIR)")
    optional = {}
    for key in ("target_fpr", "measured_fpr"):
        if post.get(key) is not None:
            optional[key] = _fraction(source, p + key, post[key])
    count = post.get("calibration_images")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise fail(source, p + "calibration_images", count, "null or a count of images >= 0")
    map_norm = post.get("map_normalization")
    return AnomalySpec(
        map_output=map_output, score_output=score_output, calibration_images=count, **optional,
        normalization=_range(source, p + "normalization", post["normalization"]),
        map_normalization=None if map_norm is None else _range(source, p + "map_normalization", map_norm),
        threshold=_fraction(source, p + "threshold", post["threshold"]),
        resize=_choice(source, p + "resize", post.get("resize", "bilinear"), RESIZES))
