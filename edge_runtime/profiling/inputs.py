"""Model files and input feeds for profiling: bundles, random / golden / file inputs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from edge_runtime.contract import INT8_MODEL, INT8_TFLITE_MODEL
from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.graph import ValueInfo
from edge_runtime.npz import data_limit_bytes, read_npz
from edge_runtime.profiling.backends import ModelFiles

if TYPE_CHECKING:
    from edge_runtime.bundle import LoadedBundle
    from edge_runtime.trust import TrustPolicy

log = logging.getLogger(__name__)

POOL_SIZE = 4  # distinct random inputs, so no kernel keeps reusing hot rows (references.md §2)


def model_files(model_or_bundle: str | Path, trust: TrustPolicy | None = None) -> ModelFiles:
    """Locate the files of a model path or a bundle directory.

    A bundle (a directory with ``manifest.json``) is authenticated and checked as ``run`` checks it
    (:func:`edge_runtime.bundle.load_bundle`: signature under ``trust``, every file's size and
    sha256), and its files are then read as checked (:func:`bundle_files`). A directory without a
    manifest is a folder of files: ``model.onnx`` and optionally ``model.tflite``, ``golden.npz``
    (key ``"x"``), opened as they are, like a model file given by its path.

    Raises:
        BundleError: a bundle that fails its checks, or a directory without model.onnx.
        InvalidArgumentError: the path does not exist.
    """
    path = Path(model_or_bundle).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file():
        from edge_runtime.bundle import load_bundle

        return bundle_files(load_bundle(path, trust=trust))
    if path.is_dir():
        onnx_path = path / "model.onnx"
        if not onnx_path.is_file():
            raise BundleError(f"bundle {path} has no model.onnx (found: {sorted(p.name for p in path.iterdir())}). "
                              f"Pass a bundle made by the exporter or the path of an .onnx file.")
        opt = [path / n for n in ("model.tflite", "golden.npz", "manifest.json", INT8_MODEL, INT8_TFLITE_MODEL)]
        return ModelFiles(onnx_path, *(p if p.is_file() else None for p in opt))
    if not path.is_file():
        raise InvalidArgumentError(f"model {str(path)!r} does not exist; pass an .onnx file or a bundle directory.")
    sibling = path.with_suffix(".tflite")
    return ModelFiles(path, sibling if sibling.is_file() else None)


def bundle_files(bundle: LoadedBundle) -> ModelFiles:
    """The model files of a checked bundle (its int8 model included when it has one), each opened by
    the runtimes as the bundle's checks read it (``LoadedBundle.read_checked``)."""
    return ModelFiles(bundle.require_onnx(), bundle.tflite_path, bundle.golden_path, bundle.path / "manifest.json",
                      bundle.int8_path, bundle.int8_tflite_path, checked=bundle.read_checked,
                      input_name=bundle.spec.inputs[0].name if bundle.spec.inputs else None)


def _read(path: Path, data: bytes | None = None) -> Any:
    """A .npy array or an .npz's arrays, bounded (no pickles; an .npz's sizes checked before inflating).
    ``data``: an .npz's bytes as a bundle's checks read them (``path`` then only names it)."""
    fail = lambda message: InvalidArgumentError(  # noqa: E731
        f"--input: {message} Save plain numeric arrays (numpy.save / numpy.savez), one per model input.")
    if path.suffix == ".npz":
        return read_npz(path, data_limit_bytes(), fail, data)
    try:
        return np.load(path, allow_pickle=False)  # uncompressed: its size is the file's
    except (OSError, ValueError) as exc:
        raise fail(f"{path}: cannot read it as .npy ({exc}).") from exc


def _concrete_shape(vi: ValueInfo) -> tuple[int, ...]:
    if vi.shape is None:
        raise InvalidArgumentError(f"input '{vi.name}' has no shape in the model, so random inputs cannot be "
                                   f"made; pass --input FILE.npy/.npz with real data.")
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in vi.shape)  # symbolic dims = 1


def random_feeds(inputs: Sequence[ValueInfo], pool: int = POOL_SIZE, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``pool`` feeds of random values: floats ~ N(0, 1), integers and bools zero.

    Args:
        inputs: the model's inputs; symbolic dimensions become 1.
        pool: how many distinct feeds.
        seed: random seed (profiles are reproducible).
    """
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(pool):
        feed = {}
        for vi in inputs:
            shape = _concrete_shape(vi)
            if np.issubdtype(vi.dtype, np.floating):
                feed[vi.name] = rng.standard_normal(shape).astype(vi.dtype)
            else:
                feed[vi.name] = np.zeros(shape, dtype=vi.dtype)
        feeds.append(feed)
    return feeds


def _cast(vi: ValueInfo, value: Any, source: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype != vi.dtype:
        if arr.dtype.kind != np.dtype(vi.dtype).kind:
            raise InvalidArgumentError(f"{source}: array for input '{vi.name}' has dtype {arr.dtype}; the model "
                                       f"expects {vi.dtype}. Save it with .astype(np.{np.dtype(vi.dtype).name}).")
        arr = arr.astype(vi.dtype)
    return arr


def file_feeds(path: Path, inputs: Sequence[ValueInfo], golden_key: str | None = None,
               data: bytes | None = None) -> list[dict[str, np.ndarray]]:
    """One feed from a .npy (the first input) or .npz (keys = input names, or one array for one input).
    ``data``: an .npz's bytes as read and checked (a bundle's golden.npz).

    Raises:
        InvalidArgumentError: unreadable file, wrong suffix, or arrays that do not match the inputs.
    """
    names = [vi.name for vi in inputs]
    if path.suffix not in (".npy", ".npz") or not path.is_file():
        raise InvalidArgumentError(f"--input {str(path)!r} must be an existing .npy or .npz file (or 'random', "
                                   f"'golden'); the model's inputs are {names}.")
    data = _read(path, data)
    if path.suffix == ".npy":
        if len(inputs) != 1:
            raise InvalidArgumentError(f"{path}: a .npy holds one array but the model has inputs {names}; "
                                       f"save an .npz with one array per input name.")
        return [{names[0]: _cast(inputs[0], data, str(path))}]
    keys = list(data.keys())
    if golden_key is not None and golden_key in keys and len(inputs) == 1:
        return [{names[0]: _cast(inputs[0], data[golden_key], str(path))}]
    if len(keys) == 1 and len(inputs) == 1:
        return [{names[0]: _cast(inputs[0], data[keys[0]], str(path))}]
    missing = [n for n in names if n not in keys]
    if missing:
        raise InvalidArgumentError(f"{path} has arrays {keys}; the model's inputs {missing} are missing. "
                                   f"Save one array per input name.")
    return [{vi.name: _cast(vi, data[vi.name], str(path)) for vi in inputs}]


def make_feeds(spec: str | Path, inputs: Sequence[ValueInfo], files: ModelFiles) -> tuple[list[dict[str, np.ndarray]], str]:
    """Feeds for ``--input``: ``"random"``, ``"golden"`` (the bundle's golden.npz, key "x") or a file.

    Returns:
        (feeds, description for the report).

    Raises:
        BundleError: "golden" without a bundle golden.npz.
        InvalidArgumentError: a bad file.
    """
    if str(spec) == "random":
        return random_feeds(inputs), f"random N(0,1), pool of {POOL_SIZE}, symbolic dims = 1"
    if str(spec) == "golden":
        if files.golden is None:
            raise BundleError(f"--input golden needs golden.npz in the bundle directory {files.onnx.parent}; "
                              f"none there. Use --input random or a .npy/.npz file.")
        feeds = file_feeds(files.golden, inputs, golden_key="x", data=files.content(files.golden))
        first = inputs[0]
        if len(inputs) == 1 and first.shape and not isinstance(first.shape[0], int):
            # a dynamic batch axis: profile batch 1, one golden sample per call (the usual edge case)
            x = feeds[0][first.name]
            feeds = [{first.name: x[i:i + 1]} for i in range(min(POOL_SIZE, len(x)))]
            return feeds, f"golden samples, batch 1, pool of {len(feeds)} ({files.golden})"
        return feeds, f"golden ({files.golden})"
    return file_feeds(Path(spec).expanduser(), inputs), f"file ({spec})"
