"""``validate`` for detection, segmentation and anomaly bundles: post-processed results and task metrics.

Every output goes through the bundle's own postprocess (:mod:`edge_runtime.tasks`), for each
backend and for PyTorch's outputs stored in golden.npz, and the results are compared:

- detection: boxes above the bundle's score threshold that the reference also found (same
  class, IoU >= 0.5, one to one), as a percentage of the larger of the two counts;
- segmentation: pixels whose class is the reference's;
- anomaly: images with the reference's decision, and the largest normalised-score difference.

With labelled data (:mod:`edge_runtime.validation.task_data`) each backend gets the task's
metrics (:mod:`edge_runtime.tasks.metrics`): detection mAP@0.5 (decoded with score threshold
:data:`MAP_SCORE_THRESHOLD` so the whole precision/recall curve counts) and recall at the
bundle's threshold; segmentation IoU and Dice per class, their means and pixel accuracy;
anomaly image and pixel AUROC, the false-positive rate on good images and the recall on
defective ones at the bundle's threshold. A backend fails when its first metric (mAP, mean
IoU, image AUROC) is more than ``max_drop`` points below the reference backend's.

Fail closed: an image whose outputs are not all finite finds no box, gets no pixel right
and gets the wrong anomaly decision and the worst rank.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.bundle import LoadedBundle
from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.tasks import anomaly, detection, metrics, segmentation
from edge_runtime.validation.task_data import TaskData
from edge_runtime.validation.task_report import METRICS, TaskAgreement, TaskCheck

#: Score threshold of the detections mAP is computed on (ultralytics' ``val`` uses the same).
MAP_SCORE_THRESHOLD = 0.001


def _percent(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(100.0 * value)


@contextlib.contextmanager
def _postprocess_errors(task: str) -> Iterator[None]:
    """Outputs that do not fit the postprocess: one InvalidArgumentError naming the fix."""
    try:
        yield
    except InvalidInputError as exc:
        raise InvalidArgumentError(f"{exc} (bundle postprocess for task {task!r}); re-export the bundle with the "
                                   f"right --task and postprocess flags.") from exc


class TaskValidator:
    """Decodes a task bundle's outputs and compares backends; holds no engines.

    Args:
        bundle: the verified bundle (its task is not classification).
        input_shape: one input's shape (golden.npz's ``x.shape[1:]``), for the decoding frame.
        max_drop: largest allowed drop of the first metric, in percentage points.

    Example:
        >>> validator = TaskValidator(load_bundle("det"), (3, 32, 32), 1.0)  # doctest: +SKIP
        >>> validator.golden(golden.ys, {"edge": outputs}).agreement  # doctest: +SKIP
    """

    def __init__(self, bundle: LoadedBundle, input_shape: tuple[int, ...], max_drop: float) -> None:
        self.task, self.spec, self.max_drop = bundle.spec.task, bundle.spec.postprocess, max_drop
        self.names = [o.name for o in bundle.spec.outputs]
        pre = bundle.spec.preprocessing
        self.frame = tuple(pre.input_size) if pre is not None else tuple(input_shape[-2:])  # (H, W) of the input
        named = getattr(self.spec, "class_names", None) or getattr(self.spec, "classes", ())
        self.classes = tuple(named) or tuple(bundle.labels)

    def class_count(self) -> int | None:
        """Classes ground truth may use (None when the bundle does not name them)."""
        return len(self.classes) or None

    def per_image(self, outputs: Sequence[NDArray[Any]]) -> list[dict[str, NDArray[Any]] | None]:
        """Named outputs of each image ((1, ...) each); None for an image with a non-finite output."""
        if len(self.names) != len(outputs):
            raise InvalidArgumentError(f"the model gave {len(outputs)} outputs but the manifest names "
                                       f"{len(self.names)} {self.names}; re-export the bundle.")
        named = dict(zip(self.names, (np.asarray(o) for o in outputs)))
        rows = []
        for i in range(len(outputs[0])):
            one = {k: v[i:i + 1] for k, v in named.items()}
            rows.append(one if all(np.isfinite(v).all() for v in one.values()) else None)
        return rows

    # -- decoding -------------------------------------------------------------------------------
    def _detections(self, images: list[Any], threshold: float) -> list[detection.Detections]:
        spec = dataclasses.replace(self.spec, score_threshold=threshold)
        empty = detection.Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return [empty if one is None else detection.decode(one, spec, self.frame) for one in images]

    def _masks(self, images: list[Any], shape: tuple[int, int]) -> NDArray[np.int64]:
        """(N, H, W) class masks; -1 for an image with non-finite outputs (never a class)."""
        return np.stack([np.full(shape, -1, np.int64) if one is None else
                         segmentation.masks(one, self.spec, shape).classes.astype(np.int64) for one in images])

    def _scores(self, images: list[Any]) -> NDArray[np.float64]:
        """Normalised anomaly scores; NaN for an image with non-finite outputs."""
        return np.array([np.nan if one is None else anomaly.normalize(anomaly.raw_score(one, self.spec),
                                                                      self.spec.normalization) for one in images])

    def decode(self, images: list[Any], data: TaskData | None = None) -> Any:
        """The images' results: detections, masks (at the truth's size, else the input's) or scores.

        Raises:
            InvalidArgumentError: the outputs do not fit the bundle's postprocess.
        """
        with _postprocess_errors(self.task):
            if self.task == "detection":
                return self._detections(images, min(MAP_SCORE_THRESHOLD, self.spec.score_threshold))
            if self.task == "segmentation":
                return self._masks(images, data.masks.shape[1:] if data is not None else self.frame)
            return self._scores(images)

    # -- agreement ------------------------------------------------------------------------------
    def agreement(self, results: Any, reference: Any) -> tuple[float | None, float | None]:
        """(% same boxes / pixels / decisions as ``reference``, anomaly's max score difference)."""
        if self.task == "detection":
            return self._same_boxes(results, reference), None
        if self.task == "segmentation":
            same = (results == reference) & (results >= 0)
            return float(100.0 * same.mean()) if same.size else None, None
        threshold = self.spec.threshold
        decided = lambda s: np.where(np.isnan(s), -1, s > threshold)  # noqa: E731  non-finite: no decision
        same = decided(results) == decided(reference)
        diff = np.abs(results - reference)
        return float(100.0 * same.mean()), float(np.max(np.where(np.isnan(diff), np.inf, diff)))

    def _same_boxes(self, results: list[detection.Detections], reference: list[detection.Detections]) -> float:
        threshold, matched, total = self.spec.score_threshold, 0, 0
        for mine, theirs in zip(results, reference):
            a, b = mine.scores > threshold, theirs.scores > threshold
            hits = metrics.match_boxes(mine.boxes[a], mine.scores[a], mine.classes[a], theirs.boxes[b],
                                       theirs.classes[b])
            matched += int(hits.sum())
            total += max(int(a.sum()), int(b.sum()))
        return 100.0 * matched / total if total else 100.0  # neither found anything: they agree

    def golden(self, reference: Sequence[NDArray[Any]], outputs: dict[str, Sequence[NDArray[Any]] | str],
               source: str = "PyTorch") -> tuple[TaskAgreement, ...]:
        """Each backend's results on golden.npz against PyTorch's stored outputs decoded the same way.

        Args:
            reference: golden.npz's outputs (``Golden.ys``).
            outputs: backend -> its outputs on golden.npz's inputs, or the error that stopped it.
            source: who computed ``reference`` (golden.int8.npz: "onnxruntime int8").
        """
        ref = self.decode(self.per_image(reference))
        checks = []
        for name, outs in outputs.items():
            if isinstance(outs, str):
                checks.append(TaskAgreement(name, len(reference[0]), None, None, outs, source))
                continue
            try:
                agreement, diff = self.agreement(self.decode(self.per_image(outs)), ref)
            except InvalidArgumentError as exc:
                checks.append(TaskAgreement(name, len(reference[0]), None, None, str(exc), source))
                continue
            checks.append(TaskAgreement(name, len(reference[0]), agreement, diff, reference=source))
        return tuple(checks)

    # -- labelled data --------------------------------------------------------------------------
    def labelled(self, data: TaskData, outputs: dict[str, Sequence[NDArray[Any]]], reference: str
                 ) -> tuple[tuple[TaskCheck, ...], list[str]]:
        """Each backend's metrics on ``data`` and agreement with the ``reference`` backend.

        Returns:
            (checks in ``outputs``' order, warnings about non-finite outputs).
        """
        images = {name: self.per_image(outs) for name, outs in outputs.items()}
        warnings = [f"{name}: {sum(i is None for i in rows)} image(s) gave non-finite (NaN/inf) outputs, e.g. "
                    f"{['#%d' % k for k, i in enumerate(rows) if i is None][:3]}; counted as wrong."
                    for name, rows in images.items() if any(i is None for i in rows)]
        results = {name: self.decode(rows, data) for name, rows in images.items()}
        found = {name: self._metrics(images[name], results[name], data) for name in results}
        first = next(iter(METRICS[self.task]))
        ref_value = found[reference][0][first]
        checks = []
        for name, (values, per_class) in found.items():
            agreement, diff = self.agreement(results[name], results[reference])
            drop = None if ref_value is None or values[first] is None else ref_value - values[first]
            checks.append(TaskCheck(name, values, per_class, agreement, diff, drop,
                                    drop is None or drop <= self.max_drop + 1e-9))
        return tuple(checks), warnings

    def _metrics(self, images: list[Any], results: Any, data: TaskData
                 ) -> tuple[dict[str, float | None], dict[str, dict[str, float | None]]]:
        if self.task == "detection":
            return self._detection_metrics(results, data)
        if self.task == "segmentation":
            return self._segmentation_metrics(results, data)
        with _postprocess_errors(self.task):  # the map is read here first
            return self._anomaly_metrics(images, results, data), {}

    def _name(self, k: int) -> str:
        return self.classes[k] if k < len(self.classes) else str(k)

    def _detection_metrics(self, results: list[detection.Detections], data: TaskData) -> tuple[dict, dict]:
        truths = [data.truth_boxes(i) for i in range(len(data))]
        found = metrics.detection_metrics([(d.boxes, d.scores, d.classes) for d in results], truths,
                                          self.spec.score_threshold)
        return ({"map50": _percent(found.map50), "recall": _percent(found.recall)},
                {self._name(k): {"AP": _percent(v)} for k, v in sorted(found.ap.items())})

    def _segmentation_metrics(self, masks: NDArray[np.int64], data: TaskData) -> tuple[dict, dict]:
        count = max(len(self.classes), int(data.masks.max()) + 1, int(masks.max()) + 1)
        # non-finite images (-1) go to an extra column: false negatives of their true classes
        confusion = metrics.confusion_matrix(data.masks, np.where(masks < 0, count, masks), count + 1)
        iou, dice = (v[:count] for v in metrics.iou_dice(confusion))
        defined = ~np.isnan(iou)
        values = {"miou": _percent(float(iou[defined].mean())) if defined.any() else None,
                  "mdice": _percent(float(dice[defined].mean())) if defined.any() else None,
                  "pixel_accuracy": _percent(float(np.trace(confusion)) / max(int(confusion.sum()), 1))}
        return values, {self._name(k): {"IoU": _percent(iou[k]), "Dice": _percent(dice[k])}
                        for k in range(count) if defined[k]}

    def _anomaly_metrics(self, images: list[Any], scores: NDArray[np.float64], data: TaskData
                         ) -> dict[str, float | None]:
        y = data.y
        worst = np.where(np.isnan(scores), np.where(y == 1, -np.inf, np.inf), scores)  # fail closed
        flagged = worst > self.spec.threshold
        values = {"image_auroc": _percent(metrics.auroc(y, worst)), "pixel_auroc": None,
                  "fpr": _percent(float(flagged[y == 0].mean())) if (y == 0).any() else None,
                  "recall": _percent(float(flagged[y == 1].mean())) if (y == 1).any() else None}
        if data.masks is not None:
            shape = data.masks.shape[1:]
            maps = np.stack([np.full(shape, np.nan) if one is None else anomaly.anomaly_map(one, self.spec, shape)
                             for one in images]).astype(np.float64)
            maps = np.where(np.isfinite(maps), maps, np.where(data.masks == 1, -np.inf, np.inf))
            values["pixel_auroc"] = _percent(metrics.auroc(data.masks, maps))
        return values
