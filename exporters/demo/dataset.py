"""Deterministic synthetic surface-inspection data: ``ok`` and ``defect`` images.

An image is a background (:mod:`exporters.demo.textures`), plus for defect images one
defect (:mod:`exporters.demo.defects`), under random uneven lighting, a colour tint and
sensor noise. Image ``i`` of a split (and its label) depends only on ``(seed, split, i)``
and ``defect_fraction``, so splits are reproducible, the train and test splits never
share an image, and a smaller split is a prefix of a larger one. Each image comes with its
defect mask (``meta["mask"]``: class per pixel, 0 background, 1-4 scratch, crack, pit, stain;
:func:`exporters.demo.defects.defect_mask`), the segmenter's ground truth. Generation is
numpy-only (no torch).

Example:
    >>> cfg = DemoDataConfig(n_train=8, n_test=4)
    >>> x, y, meta = make_split(cfg, "test")
    >>> x.shape, x.dtype, y.tolist()
    ((4, 64, 64, 3), dtype('uint8'), [0, 1, 0, 1])
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import EdgeRuntimeError
from exporters.demo.defects import DEFECT_TYPES, MASK_CLASSES, defect_mask, draw_defect
from exporters.demo.textures import KINDS, illuminate, make_background

log = logging.getLogger(__name__)

LABELS = ("ok", "defect")
SPLITS = {"train": 1, "test": 2}  # mixed into the seed: splits never share an image
#: Per-channel mean/std of the default config's training images in [0, 1], rounded
#: (measured: ``x.reshape(-1, 3).mean(0) / 255`` = 0.481 0.482 0.479, std 0.130, on 2,000 images).
MEAN = (0.48, 0.48, 0.48)
STD = (0.13, 0.13, 0.13)
#: meta arrays of a split, in the cache; bumping CACHE_VERSION names a new cache file (2: masks added)
META_KEYS = ("defect_type", "background", "mask")
CACHE_VERSION = 2


class DemoDataError(EdgeRuntimeError, ValueError):
    """Invalid demo-data configuration or output location (part of the project's error hierarchy,
    so the CLI reports it as a one-line error)."""


@dataclass(frozen=True)
class DemoDataConfig:
    """What :func:`make_split` generates.

    Example:
        >>> DemoDataConfig(size=96, color=False).size
        96
    """

    seed: int = 0  # every image is a function of (seed, split, index)
    size: int = 64  # square side in pixels, 64-128
    n_train: int = 4000  # training images (a few seconds to generate)
    n_test: int = 1000  # test images
    defect_fraction: float = 0.5  # share of defect images in each split (floor(n * fraction) exactly)
    defect_types: tuple[str, ...] = DEFECT_TYPES  # drawn uniformly for defect images
    backgrounds: tuple[str, ...] = KINDS  # drawn uniformly for every image
    color: bool = True  # False: grayscale replicated to 3 channels
    noise: float = 0.015  # std of the Gaussian sensor noise, in [0, 1] units

    def __post_init__(self) -> None:
        if not 64 <= self.size <= 128:
            raise DemoDataError(f"size must be in 64..128, got {self.size}")
        if self.n_train < 0 or self.n_test < 0:
            raise DemoDataError(f"n_train/n_test must be >= 0, got {self.n_train}/{self.n_test}")
        if not 0.0 <= self.defect_fraction <= 1.0:
            raise DemoDataError(f"defect_fraction must be in [0, 1], got {self.defect_fraction}")
        bad = [d for d in self.defect_types if d not in DEFECT_TYPES] or not self.defect_types
        if bad:
            raise DemoDataError(f"defect_types {self.defect_types!r} invalid; choose from {DEFECT_TYPES}")
        bad = [b for b in self.backgrounds if b not in KINDS] or not self.backgrounds
        if bad:
            raise DemoDataError(f"backgrounds {self.backgrounds!r} invalid; choose from {KINDS}")

    def key(self) -> str:
        """A short hash of every field (the cache file name)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise DemoDataError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    return SPLITS[split]


def labels_for(config: DemoDataConfig, split: str) -> NDArray[np.int64]:
    """Return the labels of ``split``: ``floor(n * defect_fraction)`` ones, evenly interleaved.

    Label ``i`` depends only on ``i`` and the fraction (image ``i`` is a defect when
    ``floor((i + 1) * f)`` steps up), so a smaller split is a prefix of a larger one with
    the same balance; training shuffles anyway.
    """
    _split_id(split)
    n = config.n_train if split == "train" else config.n_test
    steps = np.floor(np.arange(n + 1) * config.defect_fraction + 1e-9).astype(np.int64)
    return np.diff(steps)


def render(config: DemoDataConfig, rng: np.random.Generator, defect: str | None
           ) -> tuple[NDArray[np.uint8], str, NDArray[np.uint8]]:
    """Render one ``(size, size, 3)`` uint8 image; returns it, its background kind and its
    ``(size, size)`` defect mask (:data:`MASK_CLASSES` indices; all 0 without a defect)."""
    size = config.size
    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    gray = make_background(kind, rng, size)
    mask = np.zeros((size, size), np.uint8)
    if defect is not None:
        layer = draw_defect(defect, rng, size)
        gray = gray + layer
        mask = defect_mask(layer, defect)
    gray = illuminate(rng, gray)
    if config.color:
        tint = 1.0 + rng.uniform(-0.12, 0.12, 3).astype(np.float32)   # metal/plastic hue
        img = gray[:, :, None] * tint[None, None, :]                     # (H, W, 3)
    else:
        img = gray[:, :, None]                                            # (H, W, 1)
    img = img + config.noise * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.broadcast_to(img, (size, size, 3))
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), kind, mask


def make_split(config: DemoDataConfig, split: str) -> tuple[NDArray[np.uint8], NDArray[np.int64], dict[str, NDArray]]:
    """Generate one split.

    Args:
        config: what to generate.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``x`` uint8 ``(N, H, W, 3)`` RGB, ``y`` int64 ``(N,)`` (0 = ok, 1 = defect) and
        ``meta`` with ``defect_type`` (``"none"`` or a defect type) and ``background``
        string arrays of length N, and ``mask`` uint8 ``(N, H, W)``: each pixel's class
        (:data:`MASK_CLASSES`: 0 background, 1 + the defect type's index in ``DEFECT_TYPES``).

    Raises:
        DemoDataError: on an unknown split.
    """
    y = labels_for(config, split)
    sid = _split_id(split)
    x = np.empty((len(y), config.size, config.size, 3), np.uint8)
    mask = np.empty((len(y), config.size, config.size), np.uint8)
    types, kinds = [], []
    for i, label in enumerate(y):
        rng = np.random.default_rng([config.seed, sid, 1, i])
        defect = config.defect_types[int(rng.integers(len(config.defect_types)))] if label else None
        x[i], kind, mask[i] = render(config, rng, defect)
        types.append(defect or "none")
        kinds.append(kind)
    meta = {"defect_type": np.array(types, dtype=str), "background": np.array(kinds, dtype=str), "mask": mask}
    return x, y, meta


def default_cache_dir() -> Path:
    """``$EDGE_RUNTIME_CACHE/demo`` if set, else ``~/.cache/edge-runtime/demo``."""
    root = os.environ.get("EDGE_RUNTIME_CACHE")
    return Path(root) / "demo" if root else Path.home() / ".cache" / "edge-runtime" / "demo"


def _save_atomic(path: Path, arrays: dict[str, NDArray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(tmp, path)  # atomic on POSIX: readers never see a partial file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_splits(config: DemoDataConfig, cache_dir: str | os.PathLike | None = None) -> dict[str, tuple]:
    """Return ``{"train": (x, y, meta), "test": (x, y, meta)}``, generating once and caching.

    The cache is ``<cache_dir>/demo-v<CACHE_VERSION>-<config.key()>.npz`` (default
    :func:`default_cache_dir`), written atomically; a damaged cache file is regenerated.
    """
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"demo-v{CACHE_VERSION}-{config.key()}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {s: (z[f"{s}_x"], z[f"{s}_y"], {k: z[f"{s}_{k}"] for k in META_KEYS}) for s in SPLITS}
        except (OSError, KeyError, ValueError) as exc:
            log.warning("demo data cache %s unreadable (%s); regenerating", path, exc)
    out = {s: make_split(config, s) for s in SPLITS}
    arrays: dict[str, NDArray] = {}
    for s, (x, y, meta) in out.items():
        arrays.update({f"{s}_x": x, f"{s}_y": y, **{f"{s}_{k}": v for k, v in meta.items()}})
    try:
        _save_atomic(path, arrays)
    except OSError as exc:  # a read-only home must not break the demo
        log.warning("could not cache demo data at %s: %s", path, exc)
    return out


def export_imagefolder(x: NDArray[np.uint8], y: NDArray, out_dir: str | os.PathLike,
                       labels: tuple[str, ...] = LABELS, overwrite: bool = False) -> Path:
    """Write ``x`` as PNGs in ImageFolder layout: ``out_dir/<label>/<index>.png``.

    This is the layout ``torchvision.datasets.ImageFolder`` reads and the one a user's
    own data needs (one folder per class, folder names = class names).

    Raises:
        DemoDataError: if ``out_dir`` exists and is not empty (unless ``overwrite``), or a
            label index has no name in ``labels``.
    """
    from PIL import Image

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DemoDataError(f"{out} exists and is not empty; pass overwrite=True or choose another directory")
    y = np.asarray(y)
    if len(y) and (y.min() < 0 or y.max() >= len(labels)):
        raise DemoDataError(f"labels {sorted(set(y.tolist()))} need names; got labels={labels}")
    for name in labels:
        (out / name).mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(x))))
    for i, (img, label) in enumerate(zip(x, y)):
        Image.fromarray(img).save(out / labels[int(label)] / f"{i:0{width}d}.png")
    return out


def preprocessing(config: DemoDataConfig | None = None) -> dict[str, Any]:
    """The bundle preprocessing dict matching :func:`to_tensor` (docs/bundle.md)."""
    size = (config or DemoDataConfig()).size
    return {"input_size": [size, size], "resize": "bilinear", "mean": list(MEAN), "std": list(STD),
            "channel_order": "RGB", "value_range": [0, 1], "layout": "NCHW"}


def to_tensor(x: NDArray[np.uint8]) -> Any:
    """uint8 ``(N, H, W, 3)`` -> normalised float32 torch tensor ``(N, 3, H, W)``."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (t - mean) / std


def torch_dataset(x: NDArray[np.uint8], y: NDArray) -> Any:
    """A ``torch.utils.data.TensorDataset`` of normalised images and int64 labels."""
    import torch
    from torch.utils.data import TensorDataset

    return TensorDataset(to_tensor(x), torch.as_tensor(np.asarray(y), dtype=torch.int64))
