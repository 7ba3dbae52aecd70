"""Read Fashion-MNIST from the IDX .gz files of the Debian package ``dataset-fashion-mnist``.

Install: ``apt-get update && apt-get install -y dataset-fashion-mnist`` (files land in
/usr/share/datasets/fashion-mnist/, docs/references.md §5). numpy only.

Example:
    >>> x, y = load_split("test")          # doctest: +SKIP
    >>> x.shape, x.dtype, y.shape           # doctest: +SKIP
    ((10000, 28, 28), dtype('uint8'), (10000,))
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

DEFAULT_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
MEAN, STD = 0.2860, 0.3530  # pixel mean/std of the training images in [0, 1] (standard values)
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
          "Bag", "Ankle boot")


class DatasetMissingError(FileNotFoundError):
    """The IDX files are not where they were looked for."""


def _read_idx(path: Path) -> NDArray:
    """Parse one gzipped IDX file (magic: 0, 0, dtype code, ndim; big-endian dims)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()}); "
                         "expected 0x0000080N")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def available(directory: Path = DEFAULT_DIR) -> bool:
    """True when all four IDX files exist in ``directory``."""
    return all((directory / f).exists() for pair in FILES.values() for f in pair)


def load_split(split: str, directory: Path = DEFAULT_DIR) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Return ``(images (N, 28, 28) uint8, labels (N,) int64)`` of ``"train"`` or ``"test"``.

    Raises:
        ValueError: an unknown split.
        DatasetMissingError: the files are absent (with the install command).
    """
    if split not in FILES:
        raise ValueError(f"split={split!r}; expected one of {sorted(FILES)}")
    img_name, lbl_name = FILES[split]
    if not (directory / img_name).exists():
        raise DatasetMissingError(
            f"{directory / img_name} not found; install it with `apt-get update && apt-get install -y "
            "dataset-fashion-mnist` or set FASHION_MNIST_DIR")
    images = _read_idx(directory / img_name)
    labels = _read_idx(directory / lbl_name).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def normalized(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``(N, 28, 28)`` uint8 -> ``(N, 1, 28, 28)`` float32, standardised with MEAN/STD."""
    x = images.astype(np.float32)[:, None] / 255.0
    return (x - MEAN) / STD
