"""Anomaly detection on good-parts-only models: the decision threshold, the score and the map (numpy).

Models in the style of anomalib's PaDiM / PatchCore / EfficientAD output a per-pixel anomaly
map and (optionally) an image score; they are trained on good parts only, so the decision
threshold is fitted afterwards on good calibration images at a chosen false-positive rate:
:func:`fit_threshold` (at export). On the device, :func:`score_and_map` normalises the
image score with the fitted (min, max) of good parts' scores and compares it with the
threshold; the map is upsampled to the image and normalised for display.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.tasks.segmentation import resize_map
from edge_runtime.tasks.spec import AnomalySpec


@dataclass(frozen=True)
class ThresholdFit:
    """A threshold fitted on good parts: ``normalised score > threshold`` means anomalous."""

    threshold: float                      # on the normalised score, in [0, 1]
    normalization: tuple[float, float]    # (min, max) of the good parts' raw scores
    measured_fpr: float                   # good calibration images above the threshold / all
    target_fpr: float
    images: int


def fit_threshold(good_scores: Any, target_fpr: float = 0.01) -> ThresholdFit:
    """Fit the normalisation and the decision threshold on good parts' raw image scores.

    The threshold lies halfway between the good score that leaves at most ``floor(target_fpr *
    n)`` good parts strictly above it and the next higher good score, so the false-positive
    rate on the calibration images never exceeds the target and no calibration image sits on
    the threshold, where a 1e-7 difference between backends would flip its decision. With few
    images (or ``target_fpr`` 0) none may be flagged: the threshold then lies one half-gap above
    the largest good score (the gap to the second largest, or 0.1% of the good scores' range
    when they tie), and the normalisation's top is put there, so the threshold is 1.0 and every
    good part scores below it.

    Args:
        good_scores: raw image scores of good (defect-free) calibration images.
        target_fpr: the false-positive rate allowed on good parts, in [0, 1).

    Returns:
        The :class:`ThresholdFit` (threshold on the scale where the good parts span [0, 1]).

    Raises:
        InvalidArgumentError: fewer than 2 scores, a non-finite one, all equal, or
            ``target_fpr`` outside [0, 1).

    Example:
        >>> fit = fit_threshold([1.0, 2.0, 3.0, 5.0], target_fpr=0.25)
        >>> fit.normalization, fit.threshold, fit.measured_fpr
        ((1.0, 5.0), 0.75, 0.25)
    """
    scores = np.sort(np.asarray(good_scores, np.float64).reshape(-1))
    if isinstance(target_fpr, bool) or not isinstance(target_fpr, (int, float)) or not 0 <= target_fpr < 1:
        raise InvalidArgumentError(f"target_fpr={target_fpr!r}; expected a false-positive rate in [0, 1), "
                                   f"e.g. --target-fpr 0.01.")
    if scores.size < 2 or not np.isfinite(scores).all():
        raise InvalidArgumentError(f"fitting an anomaly threshold needs at least 2 finite scores of good parts, "
                                   f"got {scores.size} (finite: {int(np.isfinite(scores).sum())}); pass more good "
                                   f"calibration images (--calib DIR).")
    low, high = float(scores[0]), float(scores[-1])
    if not high > low:
        raise InvalidArgumentError(f"every good part scored {low:g}: the model's anomaly score does not vary, so "
                                   f"no threshold can be fitted; check the model and --calib images.")
    allowed = int(math.floor(target_fpr * scores.size + 1e-9))
    below = float(scores[scores.size - 1 - allowed])
    if allowed:
        raw = 0.5 * (below + float(scores[scores.size - allowed]))  # ties with `below` stay below: count unchanged
    else:  # nothing above the largest good score: half a gap beyond it, which becomes the scale's top
        gap = high - float(scores[-2]) or 1e-3 * (high - low)
        raw = high = high + 0.5 * gap
    measured = float(np.count_nonzero(scores > raw)) / scores.size
    return ThresholdFit(threshold=(raw - low) / (high - low), normalization=(low, high), measured_fpr=measured,
                        target_fpr=float(target_fpr), images=int(scores.size))


@dataclass(frozen=True)
class AnomalyResult:
    """One image's anomaly verdict and its map."""

    raw_score: float                 # the model's image score (or the map's max)
    score: float                     # normalised: good calibration parts spanned [0, 1]
    anomalous: bool                  # score > the bundle's threshold
    heatmap: NDArray[np.float32]     # (H, W) map normalised with map_normalization, clipped to [0, 1]


def _array(outputs: Mapping[str, Any], name: str) -> NDArray[np.float32]:
    if name not in outputs:
        raise InvalidInputError(f"anomaly: the model has no output {name!r} (outputs: {sorted(outputs)}); fix "
                                f"postprocess.map_output / score_output in the manifest.")
    return np.asarray(outputs[name], np.float32)


def raw_score(outputs: Mapping[str, Any], spec: AnomalySpec) -> float:
    """One image's raw score: ``score_output``'s value, else the max of the map."""
    if spec.score_output is None:
        return float(_array(outputs, spec.map_output).max())
    score = _array(outputs, spec.score_output).reshape(-1)
    if score.size != 1:
        raise InvalidInputError(f"anomaly: output {spec.score_output!r} has {score.size} values; expected one "
                                f"score for one image.")
    return float(score[0])


def normalize(value: Any, bounds: tuple[float, float]) -> Any:
    """``(value - min) / (max - min)``: good calibration parts span [0, 1]."""
    low, high = bounds
    return (value - low) / (high - low)


def anomaly_map(outputs: Mapping[str, Any], spec: AnomalySpec, image_shape: tuple[int, int]) -> NDArray[np.float32]:
    """One image's raw anomaly map (not normalised, not clipped) resized to ``image_shape`` (H, W).

    Raises:
        InvalidInputError: a missing output or a map that is not one image's.
    """
    amap = _array(outputs, spec.map_output)
    squeezed = amap.reshape(amap.shape[-2:]) if amap.ndim >= 2 and amap.size == int(np.prod(amap.shape[-2:])) \
        else None
    if squeezed is None:
        raise InvalidInputError(f"anomaly: map {spec.map_output!r} has shape {amap.shape}; expected one image's "
                                f"(1, 1, h, w).")
    return resize_map(squeezed[None], image_shape, spec.resize)[0]


def score_and_map(outputs: Mapping[str, Any], spec: AnomalySpec, image_shape: tuple[int, int]) -> AnomalyResult:
    """One image's score, decision and heatmap at ``image_shape`` (H, W).

    Args:
        outputs: output name -> array of one image (map (1, 1, h, w), (1, h, w) or (h, w)).
        spec: the bundle's anomaly postprocess.
        image_shape: (H, W) of the image the heatmap is reported on.

    Returns:
        The :class:`AnomalyResult`.

    Raises:
        InvalidInputError: a missing output or a map that is not one image's.

    Example:
        >>> spec = AnomalySpec(map_output="m", normalization=(0.0, 2.0), threshold=0.5)
        >>> r = score_and_map({"m": np.array([[[[0.0, 1.5]]]])}, spec, (1, 4))
        >>> r.score, r.anomalous, r.heatmap.shape
        (0.75, True, (1, 4))
    """
    raw = raw_score(outputs, spec)
    score = float(normalize(raw, spec.normalization))
    heat = anomaly_map(outputs, spec, image_shape)
    heat = np.clip(normalize(heat, spec.map_normalization or spec.normalization), 0.0, 1.0).astype(np.float32)
    return AnomalyResult(raw_score=raw, score=score, anomalous=bool(score > spec.threshold), heatmap=heat)


def heat_colors(heat: NDArray[Any]) -> NDArray[np.uint8]:
    """(H, W) in [0, 1] -> (H, W, 3) uint8, dark blue (0) through green and yellow to red (1)."""
    stops = np.array([[0, 0, 96], [0, 96, 255], [0, 200, 120], [255, 230, 0], [230, 0, 0]], np.float32)
    pos = np.clip(np.nan_to_num(heat), 0, 1) * (len(stops) - 1)
    lower = np.minimum(pos.astype(np.int64), len(stops) - 2)
    frac = (pos - lower)[..., None]
    return np.rint(stops[lower] * (1 - frac) + stops[lower + 1] * frac).astype(np.uint8)
