"""Labelled data for validation: an ImageFolder directory or an NPZ file with ``x`` and ``y``.

ImageFolder: one subdirectory per class whose name is one of the manifest's labels (a
subset is fine); images are read with :mod:`edge_runtime.preprocessing`, exactly as the
manifest says. NPZ: ``x`` already preprocessed (N, ...) and ``y`` as class indices or
label strings.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.npz import data_limit_bytes, read_npz
from edge_runtime.preprocessing import IMAGE_SUFFIXES, ImageError, Preprocessing, load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledData:
    """Model inputs with their true class indices.

    Example:
        >>> data = LabelledData(np.zeros((2, 3, 8, 8), np.float32), np.array([0, 1]), ("a.png", "b.png"),
        ...                     "2 images")
        >>> len(data)
        2
    """

    x: NDArray[np.float32]  # (N, ...) preprocessed inputs
    y: NDArray[np.int64]  # (N,) class indices into the manifest's labels
    names: tuple[str, ...]  # a file name or "#index" per sample
    source: str  # human description for reports

    def __len__(self) -> int:
        return int(self.y.shape[0])


def load_labelled(path: str | Path, labels: Sequence[str], preprocessing: dict[str, Any] | None
                  ) -> LabelledData:
    """Load labelled data from an ImageFolder directory or an ``.npz`` file.

    Args:
        path: a directory with one subfolder per class, or an NPZ with ``x`` and ``y``.
        labels: the manifest's class names (folder names and string labels are matched to them).
        preprocessing: the manifest's preprocessing (required for a directory).

    Returns:
        The :class:`LabelledData`.

    Raises:
        InvalidArgumentError: missing path, folders that are not labels, unreadable images, an NPZ
            without x/y or with labels outside the model's classes.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if preprocessing is None:
            raise InvalidArgumentError(
                f"--data {str(path)!r} is an image directory but the bundle's manifest has no "
                f"preprocessing; re-export with preprocessing=... or pass an NPZ of inputs (x, y).")
        return _image_folder(path, list(labels), Preprocessing.from_dict(preprocessing))
    if path.is_file() and path.suffix == ".npz":
        return _npz(path, list(labels))
    raise InvalidArgumentError(f"--data {str(path)!r} is neither an image directory (class subfolders) "
                               f"nor an .npz file with 'x' and 'y'.")


def _image_folder(path: Path, labels: list[str], pre: Preprocessing) -> LabelledData:
    if not labels:
        raise InvalidArgumentError(f"the bundle's manifest has no labels, so the class folders of "
                                   f"{str(path)!r} cannot be matched to outputs; re-export with labels=...")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in labels]
    if unknown or not folders:
        raise InvalidArgumentError(
            f"class folders {unknown or []} of {str(path)!r} are not labels of the model; expected "
            f"subfolders named after the manifest's labels {labels} (ImageFolder layout).")
    xs, ys, names, bad = [], [], [], []
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for file in files:
            try:
                xs.append(load_image(file, pre))
            except ImageError as exc:
                bad.append(str(exc))
                continue
            ys.append(labels.index(folder.name))
            names.append(str(file.relative_to(path)))
    if bad:
        raise InvalidArgumentError(f"{len(bad)} image(s) of {str(path)!r} cannot be used: "
                                   + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
                                   + ". Fix or remove them.")
    if not xs:
        raise InvalidArgumentError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under the class folders "
                                   f"of {str(path)!r}.")
    return LabelledData(np.stack(xs).astype(np.float32), np.asarray(ys, np.int64), tuple(names),
                        f"{len(xs)} images in {len(folders)} class folders of {path}")


def _npz(path: Path, labels: list[str]) -> LabelledData:
    arrays = read_npz(path, data_limit_bytes(), lambda message: InvalidArgumentError(
        f"--data: {message} Save plain numeric arrays x and y (numpy.savez), within the memory this device has."))
    if "x" not in arrays or "y" not in arrays:
        raise InvalidArgumentError(f"{str(path)!r} holds {sorted(arrays)}; expected arrays 'x' (inputs, "
                                   f"N x ...) and 'y' (N class indices or label strings).")
    x, y = arrays["x"], arrays["y"]
    if y.ndim != 1 or x.shape[:1] != y.shape:
        raise InvalidArgumentError(f"{str(path)!r}: x has shape {x.shape} and y {y.shape}; expected y "
                                   f"with one label per row of x.")
    if y.dtype.kind in "US":
        unknown = sorted(set(y.astype(str)) - set(labels))
        if unknown:
            raise InvalidArgumentError(f"{str(path)!r}: labels {unknown[:10]} are not classes of the "
                                       f"model {labels}.")
        y = np.asarray([labels.index(v) for v in y.astype(str)], np.int64)
    elif y.dtype.kind in "iu":
        limit = len(labels) or None
        if y.size and (y.min() < 0 or (limit is not None and y.max() >= limit)):
            raise InvalidArgumentError(f"{str(path)!r}: y ranges {int(y.min())}..{int(y.max())} but the "
                                       f"model has {len(labels)} classes {labels}.")
    else:
        raise InvalidArgumentError(f"{str(path)!r}: y has dtype {y.dtype}; expected integers or strings.")
    names = tuple(f"#{i}" for i in range(len(y)))
    return LabelledData(np.ascontiguousarray(x, np.float32), y.astype(np.int64), names,
                        f"{len(y)} samples from {path}")
