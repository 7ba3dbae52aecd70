"""The bundle's task at export: inferred from the output shapes, completed, and fitted (anomaly).

:func:`task_manifest` returns the manifest's ``task`` and ``postprocess`` keys
(docs/bundle.md, docs/tasks.md). The task is inferred when the outputs leave no doubt:

- one (B, C) output: classification;
- one (B, 4 + C, N) output with N > 4 + C: detection, YOLO layout;
- one (B, C, H, W) output with C > 1 and H, W > 1: segmentation (per-class logits);

anything else (a one-channel map is a segmentation probability or an anomaly map, several
outputs, ...) needs ``task=`` (``--task``). Postprocess keys the caller leaves out are
filled from the outputs (which output, the layout, the format) and the labels; for anomaly
the normalisation and the threshold are fitted on the calibration images, which must be
good parts, at ``target_fpr``. The result is checked by the contract with the manifest.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.tasks.anomaly import fit_threshold, raw_score
from edge_runtime.tasks.spec import POSTPROCESS_KEYS, TASKS, AnomalySpec
from exporters.calibrate import SparsityReport, iter_batches

logger = logging.getLogger(__name__)

DEFAULT_TARGET_FPR = 0.01


def _dims(spec: dict[str, Any]) -> tuple[Any, ...]:
    """An output's dims after the batch axis."""
    return tuple(spec["shape"][1:])


def infer_task(outputs: Sequence[dict[str, Any]]) -> str | None:
    """The task the output shapes imply, or None when they are ambiguous.

    Example:
        >>> infer_task([{"name": "y", "shape": ["batch", 84, 2100]}])
        'detection'
    """
    if len(outputs) != 1:
        return None
    dims = _dims(outputs[0])
    if not all(isinstance(d, int) for d in dims):
        return None
    if len(dims) == 1:
        return "classification"
    if len(dims) == 2 and dims[0] >= 5 and dims[1] > dims[0]:
        return "detection"
    if len(dims) == 3 and dims[0] > 1 and dims[1] > 1 and dims[2] > 1:
        return "segmentation"
    return None


def _shapes(outputs: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{o['name']} {list(o['shape'])}" for o in outputs)


def _detection(post: dict[str, Any], outputs: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    if "output" not in post:
        boxes = [o for o in outputs if len(o["shape"]) == 3 and o["shape"][2] == 4]
        if len(outputs) == 2 and len(boxes) == 1:
            post.setdefault("layout", "ssd")
            post["output"] = boxes[0]["name"]
            post.setdefault("scores_output", next(o["name"] for o in outputs if o is not boxes[0]))
        else:
            post["output"] = outputs[0]["name"]
    if "layout" not in post:
        dims = _dims(next((o for o in outputs if o["name"] == post["output"]), outputs[0]))
        post["layout"] = "yolo" if len(dims) == 2 and isinstance(dims[1], int) and dims[1] > dims[0] else "yolo_obj"
    if labels and "classes" not in post:
        post["classes"] = list(labels)
    return post


def _segmentation(post: dict[str, Any], outputs: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    if "output" not in post:
        maps = [o for o in outputs if len(o["shape"]) == 4]
        post["output"] = (maps or list(outputs))[0]["name"]
    dims = _dims(next((o for o in outputs if o["name"] == post["output"]), outputs[0]))
    post.setdefault("format", "probability" if dims and dims[0] == 1 else "logits")
    if labels and "classes" not in post and (post["format"] == "logits" and len(labels) == dims[0]
                                             or post["format"] == "probability" and len(labels) == 2):
        post["classes"] = list(labels)
    return post


def _anomaly(post: dict[str, Any], outputs: Sequence[dict[str, Any]], model: nn.Module, calibration: Any,
             preprocessing: dict[str, Any] | None) -> dict[str, Any]:
    names = [o["name"] for o in outputs]
    if "map_output" not in post:
        maps = [o for o in outputs if len(o["shape"]) in (3, 4) and (len(o["shape"]) == 3 or o["shape"][1] == 1)]
        if not maps:
            raise InvalidArgumentError(f"export(task='anomaly'): no output looks like an anomaly map (B, 1, H, W) "
                                       f"among {_shapes(outputs)}; pass postprocess={{'map_output': NAME}}.")
        post["map_output"] = maps[0]["name"]
    if "score_output" not in post:
        single = [o for o in outputs if o["name"] != post["map_output"] and
                  (len(o["shape"]) == 1 or (len(o["shape"]) == 2 and o["shape"][1] == 1))]
        post["score_output"] = single[0]["name"] if single else None
    if "threshold" in post and "normalization" in post:
        return post  # given by the caller: nothing to fit
    if calibration is None or isinstance(calibration, SparsityReport):
        raise InvalidArgumentError("export(task='anomaly') fits its decision threshold on good parts, but no "
                                   "calibration images were given; pass calibration= images of good parts "
                                   "(CLI: --calib DIR).")
    target = post.pop("target_fpr", DEFAULT_TARGET_FPR)
    spec = AnomalySpec(map_output=post["map_output"], score_output=post["score_output"])
    scores, low, high = [], np.inf, -np.inf
    with torch.no_grad():
        for batch in iter_batches(calibration, preprocessing, 32):
            out = model(batch)
            out = out if isinstance(out, (tuple, list)) else (out,)
            arrays = {n: o.detach().cpu().numpy() for n, o in zip(names, out)}
            for i in range(len(batch)):
                one = {n: a[i:i + 1] for n, a in arrays.items()}
                scores.append(raw_score(one, spec))
            amap = arrays[spec.map_output]
            low, high = min(low, float(amap.min())), max(high, float(amap.max()))
    fit = fit_threshold(scores, target)
    logger.info("export: anomaly threshold %.4f (normalised) on %d good images, false-positive rate %.4f "
                "(target %.4f)", fit.threshold, fit.images, fit.measured_fpr, target)
    post.update(normalization={"min": fit.normalization[0], "max": fit.normalization[1]},
                threshold=fit.threshold, target_fpr=fit.target_fpr, measured_fpr=fit.measured_fpr,
                calibration_images=fit.images)
    if high > low:
        post.setdefault("map_normalization", {"min": low, "max": high})
    return post


def task_manifest(task: str | None, postprocess: dict[str, Any] | None, outputs: Sequence[dict[str, Any]],
                  labels: Sequence[str], *, model: nn.Module, calibration: Any = None,
                  preprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's ``task`` and ``postprocess`` for an exported model.

    Args:
        task: classification, detection, segmentation, anomaly, or None to infer it.
        postprocess: postprocess keys to use as given (docs/bundle.md); the rest are
            filled in. ``target_fpr`` (anomaly) is the false-positive rate to fit at.
        outputs: the manifest's output specs (name, shape with the batch axis first).
        labels: the export's labels (the default class names).
        model: the exported model (runs on the calibration images for anomaly).
        calibration: the calibration data (anomaly: good parts only).
        preprocessing: reads an image-directory ``calibration``.

    Returns:
        ``{"task": ..., "postprocess": ... or None}``.

    Raises:
        InvalidArgumentError: an unknown task, a task the outputs do not imply and none
            given, or anomaly without calibration images.
    """
    if task is not None and task not in TASKS:
        raise InvalidArgumentError(f"task={task!r}; expected one of {list(TASKS)} (CLI: --task).")
    if postprocess is not None and not isinstance(postprocess, dict):
        raise InvalidArgumentError(f"postprocess={postprocess!r}; expected a dict of postprocess keys "
                                   f"(docs/bundle.md) or None.")
    chosen = task or infer_task(outputs)
    if chosen is None:
        raise InvalidArgumentError(
            f"export: cannot tell the model's task from its outputs ({_shapes(outputs)}); pass task= (CLI: --task "
            f"classification|detection|segmentation|anomaly), e.g. --task anomaly for a (B, 1, H, W) anomaly map.")
    post = dict(postprocess or {})
    allowed = POSTPROCESS_KEYS.get(chosen, set()) | ({"target_fpr"} if chosen == "anomaly" else set())
    unknown = sorted(set(post) - allowed)
    if unknown:
        flag = "--" + unknown[0].replace("_", "-")
        raise InvalidArgumentError(
            f"export: postprocess key {unknown[0]!r} ({flag}) does not apply to task {chosen!r}"
            f"{' (inferred from the outputs)' if task is None else ''}; its keys are {sorted(allowed)} "
            f"(docs/bundle.md). Drop it, or pass the right --task.")
    if chosen == "classification":
        return {"task": chosen, "postprocess": None}
    if chosen == "detection":
        post = _detection(post, outputs, labels)
    elif chosen == "segmentation":
        post = _segmentation(post, outputs, labels)
    else:
        post = _anomaly(post, outputs, model, calibration, preprocessing)
    return {"task": chosen, "postprocess": post}
