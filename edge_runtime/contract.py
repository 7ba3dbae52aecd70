"""The typed exporter/runtime contract: the bundle manifest and the sparsity annotation (its types in
:mod:`edge_runtime.contract_annotation`, re-exported here).

Torch-free frozen dataclasses, the one place that says what a valid ``manifest.json``
(docs/bundle.md) and a valid ``edge_runtime.sparsity`` annotation (docs/annotations.md)
are. The exporter builds its manifest through :meth:`Manifest.from_json` before writing
it ("never write what the runtime would reject"); the runtime (``edge_runtime.bundle``),
``validate``, ``run`` and ``inspect`` read it back the same way.

Every check raises one error whose message names the file, the key, the value, what was
expected and the fix: :class:`~edge_runtime.errors.BundleError` for the manifest,
:class:`~edge_runtime.errors.InvalidModelError` for the annotation (it lives in the model).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.preprocessing import Preprocessing
from edge_runtime.tasks.spec import TASKS, TaskSpec, parse_task

SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
#: Files of the bundle that the manifest cannot list (they protect the manifest itself).
MANIFEST_DIGEST = "manifest.sha256"
SIGNATURE = "manifest.sig"
RESERVED_NAMES = frozenset({MANIFEST, MANIFEST_DIGEST, SIGNATURE})
# Bounds on preprocessing values: wide enough for every real pipeline (value_range 0..255
# with ImageNet statistics), narrow enough that a tampered value cannot allocate gigabytes
# (input_size) or turn every input into NaN/inf (mean, std).
MAX_INPUT_SIDE = 4096          # pixels; 4096 x 4096 x 3 float32 = 201 MB
MAX_ABS_VALUE = 1e4            # |mean|, |value_range|
MIN_STD, MAX_STD = 1e-6, 1e4
MAX_LABELS, MAX_LABEL_CHARS = 100_000, 256
MAX_FILE_BYTES = 1 << 40       # a declared size above 1 TiB is a forgery, not a model
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FIX = "Re-export the bundle (edge-runtime export) or copy it again from the build machine."


def _fail(source: str, key: str, value: Any, expected: str, fix: str = _FIX) -> BundleError:
    shown = repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return BundleError(f"{source}: {key}={shown} is invalid; expected {expected}. {fix}")


def _number(source: str, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not low <= value <= high:
        raise _fail(source, key, value, f"a finite number in [{low:g}, {high:g}]")
    return float(value)


def check_file_name(source: str, name: Any) -> str:
    """A ``files`` key must be a plain file name inside the bundle.

    Raises:
        BundleError: a path (``/``, ``\\``), ``.``/``..``, a hidden or reserved name,
            a control character, or not a string.
    """
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".") \
            or any(c in name for c in "/\\\0:") or not name.isprintable() or len(name) > 255 \
            or name in RESERVED_NAMES:
        raise _fail(source, "files key", name,
                    f"a plain file name inside the bundle (no '/', '\\', '..', leading '.', "
                    f"control characters, or {sorted(RESERVED_NAMES)})")
    return name


@dataclass(frozen=True)
class FileEntry:
    """One file the manifest lists: its plain name, sha256 (lowercase hex) and size in bytes."""

    name: str
    sha256: str
    bytes: int

    @classmethod
    def from_json(cls, source: str, name: Any, value: Any) -> FileEntry:
        """Validate one ``files`` entry. Raises BundleError naming the key and value."""
        name = check_file_name(source, name)
        if not isinstance(value, dict):
            raise _fail(source, f"files[{name!r}]", value, '{"sha256": HEX, "bytes": INT}')
        digest, size = value.get("sha256"), value.get("bytes")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise _fail(source, f"files[{name!r}].sha256", digest, "64 lowercase hex digits")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_BYTES:
            raise _fail(source, f"files[{name!r}].bytes", size, f"an integer in [0, {MAX_FILE_BYTES}]")
        return cls(name, digest, size)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the manifest records it (dims: int or symbolic name)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_json(cls, source: str, key: str, value: Any) -> TensorSpec:
        """Validate one ``inputs``/``outputs`` entry. Raises BundleError."""
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) \
                or not isinstance(value.get("shape"), list) or not isinstance(value.get("dtype"), str) \
                or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in value["shape"]):
            raise _fail(source, key, value, '{"name": str, "shape": [int or str, ...], "dtype": str}')
        return cls(value["name"], tuple(value["shape"]), value["dtype"])


def check_preprocessing(source: str, pre: Any) -> Preprocessing | None:
    """Validate the manifest's ``preprocessing`` (finite, bounded) and build it.

    Args:
        source: the manifest path, for messages.
        pre: the JSON value (a dict or None).

    Returns:
        The :class:`~edge_runtime.preprocessing.Preprocessing`, or None when absent.

    Raises:
        BundleError: a non-finite or out-of-range mean/std/value_range, an input_size
            outside [1, MAX_INPUT_SIDE], or any value the Preprocessing schema rejects.
    """
    if pre is None:
        return None
    if not isinstance(pre, dict):
        raise _fail(source, "preprocessing", pre, "an object (docs/bundle.md) or null")
    size = pre.get("input_size")
    if not isinstance(size, list) or len(size) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INPUT_SIDE for v in size):
        raise _fail(source, "preprocessing.input_size", size, f"[H, W], integers in [1, {MAX_INPUT_SIDE}]")
    for key, low, high in (("mean", -MAX_ABS_VALUE, MAX_ABS_VALUE), ("std", MIN_STD, MAX_STD),
                           ("value_range", -MAX_ABS_VALUE, MAX_ABS_VALUE)):
        values = pre.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not 1 <= len(values) <= 4:
            raise _fail(source, f"preprocessing.{key}", values, "a list of 1 to 4 numbers or null")
        for i, v in enumerate(values):
            _number(source, f"preprocessing.{key}[{i}]", v, low, high)
    try:
        return Preprocessing.from_dict(pre)
    except InvalidArgumentError as exc:
        raise BundleError(f"{source}: {exc}") from exc


def check_labels(source: str, labels: Any) -> tuple[str, ...]:
    """Labels must be printable strings (no ANSI escapes, CR/LF or other control characters).

    Raises:
        BundleError: not a list of strings, too many or too long, or a non-printable one.
    """
    if labels is None:
        return ()
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise _fail(source, "labels", labels, f"a list of at most {MAX_LABELS} strings")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label or len(label) > MAX_LABEL_CHARS \
                or not label.isprintable():
            raise _fail(source, f"labels[{i}]", label,
                        f"a printable string of 1 to {MAX_LABEL_CHARS} characters (no control "
                        f"characters such as ESC, CR or LF)")
    return tuple(labels)


#: The int8 model's and its golden outputs' file names as the exporter writes them (the manifest's
#: ``int8`` section names the files a bundle really has; ``profile`` on an unverified folder looks for these).
INT8_MODEL, INT8_GOLDEN = "model.int8.onnx", "golden.int8.npz"
#: The int8 TFLite model (ai-edge-quantizer's static int8 recipe) and LiteRT's outputs of it on golden.npz's inputs.
INT8_TFLITE_MODEL, INT8_TFLITE_GOLDEN = "model.int8.tflite", "golden.int8.tflite.npz"
INT8_FORMATS = ("QDQ",)
INT8_ACTIVATIONS = ("uint8", "int8")
MAX_INT8_ATOL = 1e6


def _listed(source: str, key: str, value: Any, files: set[str]) -> str:
    name = check_file_name(source, value)
    if name not in files:
        raise _fail(source, key, name, f"a file listed in 'files' ({sorted(files)})")
    return name


@dataclass(frozen=True)
class Int8TfliteSpec:
    """The bundle's int8 TFLite model (``manifest["int8"]["tflite"]``, docs/bundle.md).

    ``golden`` holds LiteRT's (dequantized) outputs of the int8 TFLite model on golden.npz's
    inputs; ``golden_atol`` is the largest difference to them the ``litert-int8`` backend may show.
    Both files are listed in ``files``, so their sizes and sha256 are checked (and signed) like
    every other bundle file.

    Example:
        >>> Int8TfliteSpec.from_json("m", {"model": "model.int8.tflite", "golden": "golden.int8.tflite.npz",
        ...     "golden_atol": 0.01}, {"model.int8.tflite", "golden.int8.tflite.npz"}).model
        'model.int8.tflite'
    """

    model: str
    golden: str
    golden_atol: float

    @classmethod
    def from_json(cls, source: str, value: Any, files: set[str]) -> Int8TfliteSpec:
        """Validate ``int8.tflite``; its files must be listed in ``files``. Raises BundleError."""
        if not isinstance(value, dict):
            raise _fail(source, "int8.tflite", value, 'an object {"model": NAME, "golden": NAME, ...} or absent')
        model = _listed(source, "int8.tflite.model", value.get("model"), files)
        golden = _listed(source, "int8.tflite.golden", value.get("golden"), files)
        if not model.endswith(".tflite"):
            raise _fail(source, "int8.tflite.model", model, "a .tflite file name")
        atol = _number(source, "int8.tflite.golden_atol", value.get("golden_atol"), 0.0, MAX_INT8_ATOL)
        return cls(model, golden, atol)


@dataclass(frozen=True)
class Int8Spec:
    """The bundle's int8 model (``manifest["int8"]``, docs/bundle.md): its files and scheme.

    ``golden`` holds onnxruntime's outputs of the int8 model on golden.npz's inputs (the int8
    reference); ``golden_atol`` is the largest difference to them an int8 backend may show.

    Example:
        >>> Int8Spec.from_json("m", {"model": "model.int8.onnx", "golden": "golden.int8.npz",
        ...                          "golden_atol": 0.05}, {"model.int8.onnx", "golden.int8.npz"}).format
        'QDQ'
    """

    model: str
    golden: str
    golden_atol: float
    format: str = "QDQ"
    activation_type: str = "uint8"
    tflite: Int8TfliteSpec | None = None  # the int8 TFLite model, when one was exported

    @classmethod
    def from_json(cls, source: str, value: Any, files: set[str]) -> Int8Spec:
        """Validate ``int8``; its files must be listed in ``files``. Raises BundleError."""
        if not isinstance(value, dict):
            raise _fail(source, "int8", value, 'an object {"model": NAME, "golden": NAME, ...} or absent')
        names = {key: _listed(source, f"int8.{key}", value.get(key), files) for key in ("model", "golden")}
        fmt, act = value.get("format", "QDQ"), value.get("activation_type", "uint8")
        if fmt not in INT8_FORMATS:
            raise _fail(source, "int8.format", fmt, f"one of {list(INT8_FORMATS)}")
        if act not in INT8_ACTIVATIONS:
            raise _fail(source, "int8.activation_type", act, f"one of {list(INT8_ACTIVATIONS)}")
        atol = _number(source, "int8.golden_atol", value.get("golden_atol"), 0.0, MAX_INT8_ATOL)
        tflite = None if value.get("tflite") is None else Int8TfliteSpec.from_json(source, value["tflite"], files)
        return cls(names["model"], names["golden"], atol, fmt, act, tflite)


@dataclass(frozen=True)
class Manifest:
    """A checked ``manifest.json`` (docs/bundle.md).

    ``raw`` keeps the whole JSON document (sparsity summary, versions, created_at, ...).

    Example:
        >>> entry = {"sha256": "0" * 64, "bytes": 1}
        >>> m = Manifest.from_json({"format_version": 1, "name": "m", "labels": ["ok"],
        ...                         "files": {"model.onnx": entry, "golden.npz": entry}})
        >>> m.labels, m.task
        (('ok',), 'classification')
    """

    format_version: int
    name: str
    files: tuple[FileEntry, ...]
    labels: tuple[str, ...] = ()
    preprocessing: Preprocessing | None = None
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    task: str = "classification"
    postprocess: TaskSpec | None = None  # how to read the outputs of a non-classification task
    int8: Int8Spec | None = None         # the int8 model, when exported with quantize="int8"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, doc: Any, source: str = MANIFEST) -> Manifest:
        """Validate a parsed manifest.

        Args:
            doc: the parsed JSON.
            source: the manifest's path, named in every message.

        Returns:
            The :class:`Manifest`.

        Raises:
            BundleError: the first invalid key, with its value, what is expected and the fix.
        """
        if not isinstance(doc, dict):
            raise _fail(source, "the document", type(doc).__name__, "a JSON object")
        version = doc.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS or isinstance(version, bool):
            raise _fail(source, "format_version", version, f"one of {list(SUPPORTED_FORMAT_VERSIONS)}",
                        "Upgrade edge-runtime on the device or re-export with a matching version.")
        files = doc.get("files")
        if not isinstance(files, dict):
            raise _fail(source, "files", files, 'an object {"NAME": {"sha256": HEX, "bytes": INT}}')
        missing = [f for f in ("golden.npz",) if f not in files] + (
            [] if {"model.onnx", "model.tflite"} & set(files) else ["model.onnx"])
        if missing:
            raise _fail(source, "files", sorted(files), f"entries for {missing} as well (golden.npz "
                        f"holds the reference outputs every bundle is checked against)")
        name = doc.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_LABEL_CHARS or not name.isprintable():
            raise _fail(source, "name", name, f"a printable string of at most {MAX_LABEL_CHARS} characters")
        outputs = _specs(source, "outputs", doc.get("outputs"))
        task, postprocess = parse_task(source, doc.get("task"), doc.get("postprocess"), outputs)
        int8 = None if doc.get("int8") is None else Int8Spec.from_json(source, doc["int8"], set(files))
        return cls(
            format_version=int(version), name=name,
            files=tuple(FileEntry.from_json(source, k, v) for k, v in sorted(files.items())),
            labels=check_labels(source, doc.get("labels")),
            preprocessing=check_preprocessing(source, doc.get("preprocessing")),
            inputs=_specs(source, "inputs", doc.get("inputs")),
            outputs=outputs, task=task, postprocess=postprocess, int8=int8, raw=doc)

    def file(self, name: str) -> FileEntry | None:
        """The entry named ``name``, or None."""
        return next((f for f in self.files if f.name == name), None)


def _specs(source: str, key: str, value: Any) -> tuple[TensorSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(source, key, value, "a list of tensor specs")
    return tuple(TensorSpec.from_json(source, f"{key}[{i}]", v) for i, v in enumerate(value))


# The sparsity annotation's types live beside this module; importable from here as before.
from edge_runtime.contract_annotation import ANNOTATION_VERSIONS, Annotations, LayerAnnotation  # noqa: E402,F401
