"""Tests for the demo data generator (numpy only; a few seconds)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from exporters.demo.dataset import (
    DemoDataConfig, DemoDataError, export_imagefolder, labels_for, load_splits, make_split, preprocessing,
    to_tensor,
)
from exporters.demo.defects import DEFECT_TYPES, draw_defect
from exporters.demo.textures import KINDS, make_background

SMALL = DemoDataConfig(n_train=24, n_test=16)


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    """Probability that a random defect image scores above a random ok image."""
    ranks = score.argsort().argsort()
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 - 1) / 2) / (n1 * n0))


def test_deterministic_for_a_seed_and_different_across_seeds():
    x1, y1, m1 = make_split(SMALL, "train")
    x2, y2, m2 = make_split(SMALL, "train")
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(m1["defect_type"], m2["defect_type"])
    x3, _, _ = make_split(DemoDataConfig(seed=1, n_train=24, n_test=16), "train")
    assert not np.array_equal(x1, x3)
    xt, _, _ = make_split(SMALL, "test")
    assert not np.array_equal(x1[:16], xt)  # splits never share images


def test_smaller_split_is_a_prefix_of_a_larger_one():
    x_small, y_small, _ = make_split(DemoDataConfig(n_train=4, n_test=6), "test")
    x_big, y_big, _ = make_split(DemoDataConfig(n_train=4, n_test=10), "test")
    assert np.array_equal(x_small, x_big[:6]) and np.array_equal(y_small, y_big[:6])


def test_shapes_dtypes_and_grayscale():
    x, y, meta = make_split(DemoDataConfig(size=96, color=False, n_train=4, n_test=4), "test")
    assert x.shape == (4, 96, 96, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])
    assert set(meta) == {"defect_type", "background"}
    assert all((t == "none") == (label == 0) for t, label in zip(meta["defect_type"], y))


@pytest.mark.parametrize("n, fraction", [(100, 0.5), (37, 0.5), (50, 0.2), (10, 0.0), (10, 1.0)])
def test_classes_balanced_per_config(n, fraction):
    y = labels_for(DemoDataConfig(n_train=n, defect_fraction=fraction), "train")
    assert len(y) == n and int(y.sum()) == int(np.floor(n * fraction + 1e-9))


def test_every_background_and_defect_type_is_drawn():
    x, y, meta = make_split(DemoDataConfig(n_train=4, n_test=120), "test")
    assert set(meta["background"]) == set(KINDS)
    assert set(meta["defect_type"]) == set(DEFECT_TYPES) | {"none"}


@pytest.mark.parametrize("kind", DEFECT_TYPES)
def test_each_defect_is_a_visible_local_change(kind):
    for seed in range(5):
        layer = draw_defect(kind, np.random.default_rng(seed), 64)
        assert np.abs(layer).max() >= 0.04                       # not invisible
        assert (np.abs(layer) > 0.01).mean() < 0.35              # local, not a global shift


@pytest.mark.parametrize("kind", KINDS)
def test_backgrounds_are_textured_and_in_range(kind):
    img = make_background(kind, np.random.default_rng(3), 64)
    assert img.shape == (64, 64) and img.dtype == np.float32
    assert 0.005 < img.std() < 0.3 and 0.1 < img.mean() < 0.9


def test_defect_images_differ_measurably_from_ok_images():
    """A crude high-pass statistic separates the classes better than chance, but not fully."""
    x, y, _ = make_split(DemoDataConfig(n_train=4, n_test=200), "test")
    g = x.astype(np.float32).mean(axis=3)
    pad = np.pad(g, ((0, 0), (3, 3), (3, 3)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(pad, (7, 7), axis=(1, 2))
    hp = np.abs(g - windows.mean(axis=(-1, -2))).reshape(len(g), -1)
    score = np.percentile(hp, 99.9, axis=1) / hp.mean(axis=1)   # strongest local outlier
    auc = _auc(score, y)
    assert 0.58 < auc < 0.95, auc   # measurable difference, yet not trivially separable


def test_config_validation():
    with pytest.raises(DemoDataError, match="size"):
        DemoDataConfig(size=32)
    with pytest.raises(DemoDataError, match="defect_types"):
        DemoDataConfig(defect_types=("dent",))
    with pytest.raises(DemoDataError, match="split"):
        make_split(SMALL, "val")


def test_export_imagefolder_layout_and_overwrite(tmp_path):
    from PIL import Image

    x, y, _ = make_split(SMALL, "test")
    out = export_imagefolder(x, y, tmp_path / "data")
    assert sorted(p.name for p in out.iterdir()) == ["defect", "ok"]
    files_ok = sorted((out / "ok").glob("*.png"))
    assert len(files_ok) == int((y == 0).sum()) and len(list((out / "defect").glob("*.png"))) == int(y.sum())
    first_ok = int(np.flatnonzero(y == 0)[0])
    assert np.array_equal(np.asarray(Image.open(files_ok[0])), x[first_ok])
    with pytest.raises(DemoDataError, match="not empty"):
        export_imagefolder(x, y, out)
    export_imagefolder(x[:2], y[:2], out, overwrite=True)
    with pytest.raises(DemoDataError, match="labels"):
        export_imagefolder(x[:2], np.array([0, 2]), tmp_path / "other")


def test_load_splits_caches_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RUNTIME_CACHE", str(tmp_path))
    cfg = DemoDataConfig(n_train=6, n_test=4)
    first = load_splits(cfg)
    files = list((tmp_path / "demo").iterdir())
    assert [f.suffix for f in files] == [".npz"]            # no temporary left behind
    second = load_splits(cfg)
    assert np.array_equal(first["train"][0], second["train"][0])
    assert np.array_equal(first["test"][2]["defect_type"], second["test"][2]["defect_type"])
    files[0].write_bytes(b"garbage")                        # damaged cache: regenerated
    third = load_splits(cfg)
    assert np.array_equal(first["test"][0], third["test"][0])
    assert os.path.getsize(files[0]) > 100


def test_preprocessing_matches_to_tensor():
    pre = preprocessing(DemoDataConfig(size=80))
    assert pre["input_size"] == [80, 80] and pre["layout"] == "NCHW" and pre["channel_order"] == "RGB"
    x = np.full((1, 4, 4, 3), 128, np.uint8)
    t = to_tensor(x)
    expected = (128 / 255 - pre["mean"][0]) / pre["std"][0]
    assert tuple(t.shape) == (1, 3, 4, 4) and abs(float(t[0, 0, 0, 0]) - expected) < 1e-5
