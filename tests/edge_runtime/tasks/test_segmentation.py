"""Mask post-processing against PyTorch's F.interpolate + argmax / threshold."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import InvalidInputError
from edge_runtime.tasks.segmentation import Mask, colors, masks
from edge_runtime.tasks.spec import SegmentationSpec

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIZES = [(16, 16), (37, 50), (9, 7), (64, 64)]  # upsample by 4, a non-integer ratio, downsample, equal


@pytest.mark.parametrize("size", SIZES)
def test_logits_bilinear_matches_torch(size):
    logits = np.random.default_rng(0).normal(size=(1, 4, 16, 16)).astype(np.float32)
    spec = SegmentationSpec(output="y", format="logits")
    got = masks({"y": logits}, spec, size)
    ref = F.interpolate(torch.from_numpy(logits), size=size, mode="bilinear", align_corners=False).argmax(1)[0]
    agree = (got.classes == ref.numpy()).mean()
    assert agree >= 0.999, agree  # float rounding may flip a near-tie pixel, nothing more
    assert got.classes.shape == size and got.classes.dtype == np.int32


@pytest.mark.parametrize("size", SIZES)
def test_logits_nearest_matches_torch(size):
    logits = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    got = masks({"y": logits}, SegmentationSpec(output="y", resize="nearest"), size)
    small = torch.from_numpy(logits).argmax(1, keepdim=True).float()
    ref = F.interpolate(small, size=size, mode="nearest")[0, 0].long().numpy()
    np.testing.assert_array_equal(got.classes, ref)


@pytest.mark.parametrize("size", SIZES)
def test_probability_threshold_matches_torch(size):
    prob = np.random.default_rng(2).uniform(size=(1, 1, 16, 16)).astype(np.float32)
    spec = SegmentationSpec(output="p", format="probability", threshold=0.6)
    got = masks({"p": prob}, spec, size)
    ref = (F.interpolate(torch.from_numpy(prob), size=size, mode="bilinear", align_corners=False) > 0.6)[0, 0]
    assert (got.classes == ref.numpy()).mean() >= 0.999
    assert got.defect_pixels == int(got.classes.sum()) and got.background == 0


def test_defect_area_per_class():
    mask = Mask(np.array([[0, 0, 2], [1, 2, 2]], np.int32), background=0)
    assert mask.defect_pixels == 4 and mask.defect_fraction == pytest.approx(4 / 6)
    assert mask.pixels_per_class(3).tolist() == [2, 1, 3]
    assert Mask(np.zeros((2, 2), np.int32), background=None).defect_pixels == 4


def test_colors_default_and_manifest():
    assert colors(SegmentationSpec(output="y"), 3).tolist()[0] == [0, 0, 0]
    spec = SegmentationSpec(output="y", colors=((1, 2, 3), (4, 5, 6)))
    assert colors(spec, 2).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_bad_outputs_are_one_line():
    with pytest.raises(InvalidInputError, match="no output 'y'"):
        masks({"z": np.zeros((1, 2, 4, 4))}, SegmentationSpec(output="y"), (4, 4))
    with pytest.raises(InvalidInputError, match="expects 1"):
        masks({"y": np.zeros((1, 2, 4, 4))}, SegmentationSpec(output="y", format="probability"), (4, 4))
    with pytest.raises(InvalidInputError, match="one image's"):
        masks({"y": np.zeros((2, 2, 4, 4))}, SegmentationSpec(output="y"), (4, 4))
