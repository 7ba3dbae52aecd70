"""Read a bundle's ``golden.npz`` safely: no pickles, sizes checked before decompressing.

An ``.npz`` is a zip of ``.npy`` members. :func:`load_golden` reads every member's
``.npy`` header (a few hundred bytes) from the zip stream first and refuses object
arrays, unknown keys' dtypes, and any array whose declared size exceeds
:data:`MAX_GOLDEN_BYTES` or disagrees with the zip entry's uncompressed size, so a
4 MB zip bomb declaring gigabytes is refused before one byte is inflated.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import BundleError

#: Largest golden.npz content (all arrays, uncompressed) this reader inflates.
MAX_GOLDEN_BYTES = 256 << 20
_FIX = "Re-export the bundle (edge-runtime export) to write a fresh golden.npz."


@dataclass(frozen=True)
class Golden:
    """golden.npz: the inputs ``x`` and PyTorch's outputs on them (``ys[i]`` = output i)."""

    x: NDArray[np.float32]
    ys: tuple[NDArray[Any], ...]
    output_names: tuple[str, ...] = ()


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Member name (without .npy) -> (shape, dtype), read from the .npy headers only."""
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            if dtype.hasobject:
                raise BundleError(f"{path}: array {key!r} has dtype {dtype} (Python objects, which "
                                  f"need pickle); expected numeric or string arrays. {_FIX}")
            size = math.prod(shape) * dtype.itemsize
            total += max(size, info.file_size)
            if size > info.file_size or total > MAX_GOLDEN_BYTES:
                raise BundleError(
                    f"{path}: array {key!r} declares shape {shape} {dtype} ({size} bytes; "
                    f"{total} in all), more than its zip entry ({info.file_size} bytes) or the "
                    f"{MAX_GOLDEN_BYTES >> 20} MiB limit; expected a small golden set. {_FIX}")
            found[key] = (tuple(shape), dtype)
    return found


def load_golden(path: str | Path) -> Golden:
    """Load golden.npz without pickles, after checking every array's declared size.

    Args:
        path: the golden.npz file (already checked against the manifest's sha256).

    Returns:
        The :class:`Golden` set.

    Raises:
        BundleError: not a zip of .npy files, an object array, an oversized array,
            a missing ``x``/``y`` key, or outputs whose batch differs from ``x``'s.
    """
    path = Path(path)
    try:
        headers = _headers(path)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except BundleError:
        raise
    except Exception as exc:  # zipfile/zlib/numpy raise many types for corrupt files (fuzzing found 6)
        raise BundleError(f"{path}: cannot read golden.npz ({type(exc).__name__}: {exc}); expected a "
                          f"numpy .npz with arrays x and y. {_FIX}") from exc
    missing = [k for k in ("x", "y") if k not in headers]
    if missing:
        raise BundleError(f"{path}: golden.npz lacks {missing} (has {sorted(headers)}); expected x "
                          f"(inputs) and y (first output). {_FIX}")
    x = arrays["x"]
    if x.dtype.kind != "f" or x.ndim < 1:
        raise BundleError(f"{path}: golden x has dtype {x.dtype} and shape {x.shape}; expected a "
                          f"float array (N, ...). {_FIX}")
    numbered = sorted((k for k in arrays if k.startswith("y_") and k[2:].isdigit()), key=lambda k: int(k[2:]))
    ys = tuple(arrays[k] for k in numbered) or (arrays["y"],)
    for key, y in zip(numbered or ["y"], ys):
        if y.dtype.kind not in "fiub" or y.ndim < 1 or y.shape[0] != x.shape[0]:
            raise BundleError(f"{path}: golden {key} has dtype {y.dtype} and shape {y.shape}; expected "
                              f"a numeric array with {x.shape[0]} rows like x. {_FIX}")
    names = arrays.get("output_names")
    output_names = tuple(str(n) for n in names.ravel()) if names is not None and names.dtype.kind == "U" else ()
    return Golden(np.asarray(x, np.float32), ys, output_names)
