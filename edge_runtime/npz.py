"""Read ``.npz`` files without pickles, every array's size checked before it is inflated.

An ``.npz`` is a zip of ``.npy`` members. :func:`read_npz` reads each member's ``.npy``
header (a few hundred bytes) from the zip stream first and refuses object arrays and any
array whose declared size exceeds the zip entry's uncompressed size or, summed, the caller's
limit, so a 4 MB zip bomb declaring gigabytes is refused before one byte is inflated. Used
for bundles' golden files (:mod:`edge_runtime.golden`) and for the user's data files
(``validate --data``, ``profile --input``), which are as untrusted as a camera folder.
"""
from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

Fail = Callable[[str], Exception]


def data_limit_bytes() -> int:
    """How much a user's data file may inflate to: half the memory this process can still allocate
    (the inputs are then copied to float32 and run; a 1 GB device must not be exhausted by one file)."""
    from edge_runtime.resources import available_memory

    return available_memory() // 2


class _Refused(Exception):
    """A member the reader will not inflate (the message says why)."""


def _headers(path: Path, max_bytes: int, source: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Member name (without .npy) -> (shape, dtype), read from the .npy headers of ``source`` (the
    file ``path`` or a file object) only."""
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            if dtype.hasobject:
                raise _Refused(f"{path}: array {key!r} has dtype {dtype} (Python objects, which need pickle); "
                               f"expected numeric or string arrays.")
            size = math.prod(shape) * dtype.itemsize
            total += max(size, info.file_size)
            if size > info.file_size or total > max_bytes:
                raise _Refused(f"{path}: array {key!r} declares shape {shape} {dtype} ({size} bytes; {total} in "
                               f"all), more than its zip entry ({info.file_size} bytes) or the {max_bytes >> 20} MiB "
                               f"limit.")
            found[key] = (tuple(shape), dtype)
    return found


def read_npz(path: str | Path, max_bytes: int, fail: Fail, data: bytes | None = None) -> dict[str, NDArray[Any]]:
    """Every array of an ``.npz``, after checking each one's declared size; no pickles.

    Args:
        path: the file.
        max_bytes: the most all arrays together may take once inflated.
        fail: builds the exception to raise from a one-line message (the caller adds its fix).
        data: the file's bytes, already read (a bundle's, checked as read); ``path`` then only
            names it in messages.

    Returns:
        Member name -> array.

    Raises:
        Exception: ``fail(message)`` for a file that is not a zip of .npy members, an object
            array, or arrays larger than their zip entries or ``max_bytes``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.npz"); np.savez(path, x=np.zeros(3))
        >>> read_npz(path, 1 << 20, ValueError)["x"].shape
        (3,)
    """
    path = Path(path)
    source = (lambda: io.BytesIO(data)) if data is not None else (lambda: path)  # noqa: E731
    try:
        _headers(path, max_bytes, source())
        with np.load(source(), allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except _Refused as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # zipfile/zlib/numpy raise many types for corrupt files (fuzzing found 6)
        raise fail(f"{path}: cannot read {path.name} as .npz ({type(exc).__name__}: {exc}).") from exc
