"""Preprocessing (vs the exporter's reader and a hand-written reference), perturbations, datasets, manifest checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edge_runtime.bundle import load_bundle, read_manifest
from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.preprocessing import Preprocessing, load_image, normalize, to_pixels
from edge_runtime.validation.datasets import load_labelled
from edge_runtime.validation.perturb import perturb
from tests.edge_runtime.validation.conftest import LABELS, TRUE_PRE, make_image, preprocess


def test_load_image_matches_reference_and_exporter(tmp_path):
    from exporters.calibrate import iter_image_batches

    img = make_image(1, 3)
    Image.fromarray(img).save(tmp_path / "a.png")
    ours = load_image(tmp_path / "a.png", TRUE_PRE)
    np.testing.assert_allclose(ours, preprocess(img[None])[0], atol=1e-5)
    # calibration at export reads the same pixels the device will feed
    (batch,) = list(iter_image_batches(tmp_path, TRUE_PRE, batch_size=4))
    np.testing.assert_array_equal(batch[0], ours)


def test_bgr_nhwc_and_inverse():
    pre = Preprocessing.from_dict({**TRUE_PRE, "channel_order": "BGR", "layout": "NHWC", "value_range": [-1, 1]})
    pixels = make_image(0, 1)[None].astype(np.float32)
    x = normalize(pixels, pre)
    assert x.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(to_pixels(x, pre), pixels, atol=1e-3)
    with pytest.raises(InvalidArgumentError, match="'std'"):
        Preprocessing.from_dict({**TRUE_PRE, "std": [0.5, 0, 0.5]})
    with pytest.raises(InvalidArgumentError, match="input_size"):
        Preprocessing.from_dict({"mean": [0.5]})


def test_perturbations_are_deterministic_and_grow_with_severity():
    x = preprocess(np.stack([make_image(i % 3, i) for i in range(4)]))
    for name in ("noise", "blur", "brightness", "jpeg"):
        diffs = [np.abs(perturb(x, TRUE_PRE, name, s) - x).mean() for s in (1, 2, 3)]
        assert 0 < diffs[0] < diffs[1] < diffs[2], (name, diffs)
    np.testing.assert_array_equal(perturb(x, TRUE_PRE, "noise", 2), perturb(x, TRUE_PRE, "noise", 2))
    with pytest.raises(InvalidArgumentError, match="not known"):
        perturb(x, TRUE_PRE, "fog", 1)


def test_image_folder_labels_and_unknown_folder(image_dir, tmp_path):
    data = load_labelled(image_dir, LABELS, TRUE_PRE)
    assert data.x.shape == (18, 3, 32, 32) and sorted(set(data.y.tolist())) == [0, 1, 2]
    (tmp_path / "cat").mkdir()
    with pytest.raises(InvalidArgumentError, match=r"\['cat'\] .* not labels"):
        load_labelled(tmp_path, LABELS, TRUE_PRE)


def test_manifest_version_and_missing_file(exported, tmp_path):
    import shutil

    bundle = shutil.copytree(exported, tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "golden.npz").unlink()
    with pytest.raises(BundleError, match="golden.npz is listed .* but missing"):
        load_bundle(bundle)
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version=99"):
        read_manifest(bundle)
