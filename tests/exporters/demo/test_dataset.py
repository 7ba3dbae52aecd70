"""Tests for the demo data generator (numpy only; a few seconds)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from exporters.demo.dataset import (
    DemoDataConfig, DemoDataError, export_imagefolder, labels_for, load_splits, make_split, preprocessing,
    to_tensor,
)
from exporters.demo import dataset
from exporters.demo.defects import DEFECT_TYPES, MASK_CLASSES, defect_mask, draw_defect
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
    assert set(meta) == {"defect_type", "background", "mask"}
    assert meta["mask"].shape == (4, 96, 96) and meta["mask"].dtype == np.uint8
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
    assert np.array_equal(first["train"][2]["mask"], second["train"][2]["mask"])  # masks are cached too
    assert all(f.name.startswith("demo-v2-") for f in files)  # versioned: a pre-mask cache is never read
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


def test_masks_mark_the_drawn_defect_and_nothing_on_good_images(monkeypatch):
    cfg = DemoDataConfig(n_train=4, n_test=40)
    x, y, meta = make_split(cfg, "test")
    masks = meta["mask"]
    assert not masks[y == 0].any()                                     # good images: no defect pixel
    for mask, kind in zip(masks[y == 1], meta["defect_type"][y == 1]):
        assert set(np.unique(mask).tolist()) == {0, MASK_CLASSES.index(kind)}  # one class, the drawn type's
    # the same images with the defect layer zeroed (same random stream): the difference is the defect alone
    monkeypatch.setattr(dataset, "draw_defect", lambda kind, rng, size: 0.0 * draw_defect(kind, rng, size))
    clean, _, _ = make_split(cfg, "test")
    diff = np.abs(x.astype(np.int16) - clean.astype(np.int16)).max(-1)  # (N, H, W)
    assert not diff[y == 0].any()
    for d, mask in zip(diff[y == 1], masks[y == 1] > 0):
        assert d.max() > 0 and mask[d >= 0.5 * d.max()].all()           # the strongest change lies in the mask
        assert d[mask].mean() > 3 * d[~mask].mean()                      # and the mask is where it changed


def test_defect_mask_threshold_and_errors():
    layer = np.zeros((8, 8), np.float32)
    layer[2, 3], layer[5, 5], layer[6, 6] = -0.4, 0.2, 0.05          # peak 0.4: 0.2 is in, 0.05 is out
    mask = defect_mask(layer, "crack")
    assert np.argwhere(mask).tolist() == [[2, 3], [5, 5]] and mask.max() == MASK_CLASSES.index("crack")
    assert not defect_mask(np.zeros((4, 4), np.float32), "pit").any()
    with pytest.raises(ValueError, match="unknown defect type"):
        defect_mask(layer, "dent")
