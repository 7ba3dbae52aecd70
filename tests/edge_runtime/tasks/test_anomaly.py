"""Anomaly threshold fitting on synthetic good/bad scores; score and map post-processing."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.tasks.anomaly import fit_threshold, heat_colors, normalize, score_and_map
from edge_runtime.tasks.spec import AnomalySpec


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2])
def test_fitted_threshold_meets_the_false_positive_rate(target):
    rng = np.random.default_rng(0)
    good, bad = rng.normal(1.0, 0.2, 2000), rng.normal(2.5, 0.3, 500)
    fit = fit_threshold(good, target)
    top = good.max() if target else fit.normalization[1]  # target 0: the scale's top is the threshold
    assert fit.normalization == (good.min(), top) and 0 <= fit.threshold <= 1 and fit.images == 2000
    assert top >= good.max()
    flagged = normalize(good, fit.normalization) > fit.threshold
    assert fit.measured_fpr == pytest.approx(flagged.mean()) and fit.measured_fpr <= target
    assert fit.measured_fpr >= target - 1 / 2000  # as close to the target as n allows
    fresh = normalize(rng.normal(1.0, 0.2, 20000), fit.normalization) > fit.threshold
    assert abs(fresh.mean() - target) < max(0.01, target / 3)  # generalises to unseen good parts
    recall = (normalize(bad, fit.normalization) > fit.threshold).mean()
    assert recall > (0.9 if target else 0.5)


def test_few_images_put_the_threshold_half_a_gap_above_the_largest_good_score():
    fit = fit_threshold([0.2, 0.4, 0.9], target_fpr=0.01)
    assert fit.threshold == 1.0 and fit.measured_fpr == 0.0
    assert fit.normalization == pytest.approx((0.2, 1.15))  # 0.9 + (0.9 - 0.4) / 2: no good part on the line
    assert normalize(np.array([0.9]), fit.normalization)[0] < fit.threshold - 0.1
    tied = fit_threshold([0.2, 0.9, 0.9], target_fpr=0.0)
    assert tied.normalization[1] == pytest.approx(0.9 + 0.5e-3 * 0.7) and tied.measured_fpr == 0.0


@pytest.mark.parametrize("scores, target, needle", [
    ([1.0], 0.01, "at least 2 finite"), ([1.0, np.nan, 2.0], 0.01, "finite: 2"),
    ([3.0, 3.0], 0.01, "does not vary"), ([1.0, 2.0], 1.0, "target_fpr=1.0"), ([1.0, 2.0], -0.1, "--target-fpr"),
])
def test_fit_errors(scores, target, needle):
    with pytest.raises(InvalidArgumentError, match=needle):
        fit_threshold(scores, target)


def test_score_and_map_with_and_without_score_output():
    amap = np.zeros((1, 1, 4, 4), np.float32)
    amap[0, 0, 1, 2] = 3.0
    spec = AnomalySpec(map_output="m", normalization=(1.0, 2.0), threshold=0.5, map_normalization=(0.0, 3.0))
    result = score_and_map({"m": amap}, spec, (8, 8))
    assert result.raw_score == 3.0 and result.score == 2.0 and result.anomalous
    assert result.heatmap.shape == (8, 8) and result.heatmap.max() <= 1.0 and result.heatmap.min() == 0.0
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.interpolate(torch.from_numpy(amap), size=(8, 8), mode="bilinear",
                                          align_corners=False)[0, 0].numpy() / 3.0
    np.testing.assert_allclose(result.heatmap, ref, atol=1e-6)
    with_score = AnomalySpec(map_output="m", score_output="s", normalization=(1.0, 2.0), threshold=0.5)
    quiet = score_and_map({"m": amap, "s": np.array([1.2], np.float32)}, with_score, (4, 4))
    assert quiet.score == pytest.approx(0.2) and not quiet.anomalous


def test_bad_maps_and_colors():
    spec = AnomalySpec(map_output="m", normalization=(0.0, 1.0))
    with pytest.raises(InvalidInputError, match="no output 'm'"):
        score_and_map({"x": np.zeros((1, 1, 2, 2))}, spec, (2, 2))
    with pytest.raises(InvalidInputError, match="one image's"):
        score_and_map({"m": np.zeros((2, 1, 2, 2))}, spec, (2, 2))
    colours = heat_colors(np.array([[0.0, 0.5, 1.0, np.nan]]))
    assert colours.shape == (1, 4, 3) and colours[0, 2].tolist() == [230, 0, 0] and colours[0, 0].tolist() == [0, 0, 96]
