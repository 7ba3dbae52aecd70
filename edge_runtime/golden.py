"""Read a bundle's ``golden.npz`` safely: no pickles, sizes checked before decompressing.

:func:`load_golden` reads it through :func:`edge_runtime.npz.read_npz` (every member's
``.npy`` header first: object arrays and any array whose declared size exceeds
:data:`MAX_GOLDEN_BYTES` or its zip entry's uncompressed size are refused before one byte
is inflated), then checks the golden set's keys, dtypes and shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import BundleError
from edge_runtime.npz import read_npz

#: Largest golden.npz content (all arrays, uncompressed) this reader inflates.
MAX_GOLDEN_BYTES = 256 << 20
_FIX = "Re-export the bundle (edge-runtime export) to write a fresh golden.npz."


@dataclass(frozen=True)
class Golden:
    """golden.npz: the inputs ``x`` and PyTorch's outputs on them (``ys[i]`` = output i)."""

    x: NDArray[np.float32]
    ys: tuple[NDArray[Any], ...]
    output_names: tuple[str, ...] = ()


def load_golden(path: str | Path, data: bytes | None = None) -> Golden:
    """Load golden.npz without pickles, after checking every array's declared size.

    Args:
        path: the golden.npz file (already checked against the manifest's sha256).
        data: its bytes as read and checked (:meth:`edge_runtime.bundle.LoadedBundle.read_checked`);
            ``path`` then only names it in messages.

    Returns:
        The :class:`Golden` set.

    Raises:
        BundleError: not a zip of .npy files, an object array, an oversized array,
            a missing ``x``/``y`` key, or outputs whose batch differs from ``x``'s.
    """
    path = Path(path)
    arrays = read_npz(path, MAX_GOLDEN_BYTES, lambda message: BundleError(
        f"{message} Expected a small golden.npz with numeric arrays x and y. {_FIX}"), data)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise BundleError(f"{path}: golden.npz lacks {missing} (has {sorted(arrays)}); expected x "
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


def warmup_feeds(path: str | Path, input_name: str, count: int,
                 data: bytes | None = None) -> list[dict[str, np.ndarray]]:
    """The first ``count`` golden inputs as one-image feeds of ``input_name``, for
    ``InferenceSession(warmup_feed=...)``: the engine decides on the bundle's own data, not noise.
    ``data``: as for :func:`load_golden`.

    Raises:
        BundleError: as :func:`load_golden`.
    """
    x = load_golden(path, data).x[:count]
    return [{input_name: np.ascontiguousarray(x[i:i + 1], np.float32)} for i in range(x.shape[0])]


def save_golden(path: str | Path, x: NDArray[np.float32], ys: Sequence[NDArray[Any]],
                output_names: Sequence[str]) -> None:
    """Write a golden set as :func:`load_golden` reads it: ``x``, ``y`` (the first output),
    ``y_0``, ``y_1``, ... (every output) and ``output_names``; used by the exporter for
    golden.npz (PyTorch's outputs) and golden.int8.npz (onnxruntime's int8 outputs)."""
    arrays: dict[str, Any] = {"x": x, "y": ys[0], "output_names": np.array(list(output_names))}
    arrays.update({f"y_{i}": y for i, y in enumerate(ys)})
    np.savez(path, **arrays)
