"""Backend adapters for the profiler: one ``Runner`` per runtime, all with the same call.

``edge`` is edge_runtime as a user gets it (``sparsity="auto"``, onnxruntime as the dense
engine when installed), ``edge-dense`` the same with ``sparsity="off"``, ``edge-numba`` the
numba-only engine (``sparsity="auto"``: what a device without onnxruntime runs);
``onnxruntime`` and ``litert`` are the stock runtimes, imported only when asked for (a device
may have neither), with an error that says how to install them. The edge backends measure
which layers gain from skipping zeros on the bundle's golden inputs when there are some.
``edge-int8``, ``edge-numba-int8`` and ``onnxruntime-int8`` run the bundle's int8 ONNX model
(``export --quantize int8``) the same way; ``litert-int8`` runs its int8 TFLite model
(``model.int8.tflite``: int8 input and output tensors, quantized and dequantized here).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge_runtime.errors import EdgeRuntimeError, InvalidArgumentError

log = logging.getLogger(__name__)

FP32_BACKENDS = ("edge", "edge-dense", "edge-numba", "onnxruntime", "litert")
#: The same runtimes on the bundle's int8 model (``export --quantize int8``; docs/int8.md).
INT8_BACKENDS = ("edge-int8", "edge-numba-int8", "onnxruntime-int8", "litert-int8")
BACKENDS = FP32_BACKENDS + INT8_BACKENDS
EDGE_BACKENDS = tuple(n for n in BACKENDS if n.startswith("edge"))
INT8_SUFFIX = "-int8"

Feed = Mapping[str, np.ndarray]


class BackendUnavailableError(EdgeRuntimeError):
    """A requested backend cannot run here: its package or its model file is missing."""


@dataclass(frozen=True)
class ModelFiles:
    """The files a profile run reads: the ONNX model and, from a bundle, the optional extras."""

    onnx: Path
    tflite: Path | None = None
    golden: Path | None = None
    manifest: Path | None = None
    int8: Path | None = None  # the bundle's int8 model, when it has one
    int8_tflite: Path | None = None  # the bundle's int8 TFLite model, when it has one
    #: A checked bundle's reader (``LoadedBundle.read_checked``): each runtime then gets a file's bytes
    #: as read and checked against the manifest, never the file by its path. None: open the paths.
    checked: Callable[[Path], bytes] | None = field(default=None, compare=False, repr=False)
    input_name: str | None = None  # a checked bundle's declared input (else read from the model)

    def content(self, path: Path) -> bytes | None:
        """``path``'s bytes as :attr:`checked` reads them, or None when the paths are opened as they are."""
        return None if self.checked is None else self.checked(path)

    def source(self, path: Path) -> bytes | str:
        """What onnx or onnxruntime loads ``path`` from: the checked bytes, or the path as it is."""
        content = self.content(path)
        return content if content is not None else str(path)

    def session_source(self, path: Path) -> Any:
        """What ``edge_runtime.InferenceSession`` loads ``path`` from: the checked bytes, handed over
        (``HandedBytes``, read and checked again if the session needs them twice), or the path."""
        if self.checked is None:
            return str(path)
        from edge_runtime.onnx_io import HandedBytes

        return HandedBytes.read(self.checked, path)

    def with_int8(self, names: Sequence[str]) -> tuple[str, ...]:
        """``names`` plus the int8 backends of its runtimes whose int8 model the bundle has."""
        has = {"litert": self.int8_tflite is not None}
        extra = [n + INT8_SUFFIX for n in names if n + INT8_SUFFIX in INT8_BACKENDS
                 and has.get(n, self.int8 is not None)]
        return tuple(dict.fromkeys([*names, *extra]))


@dataclass(frozen=True)
class Runner:
    """A ready backend: ``run(feed)`` returns the outputs; ``run_with_stats`` only for edge backends.

    Example:
        >>> r = open_backend("edge", ModelFiles(Path("model.onnx")), threads=1)  # doctest: +SKIP
        >>> outputs = r.run({"x": x})  # doctest: +SKIP
    """

    name: str
    run: Callable[[Feed], Sequence[np.ndarray]]
    init_seconds: float
    session: Any
    run_with_stats: Callable[[Feed], tuple[Sequence[np.ndarray], Any]] | None = None


def is_int8(name: str) -> bool:
    """Whether backend ``name`` runs the bundle's int8 model (``edge-int8``, ``onnxruntime-int8``, ...)."""
    return name.endswith(INT8_SUFFIX)


def onnxruntime_twin(name: str) -> str:
    """The stock runtime a backend is compared with: onnxruntime on the same (fp32 or int8) model."""
    return "onnxruntime" + (INT8_SUFFIX if is_int8(name) else "")


def check_backends(names: Sequence[str], allowed: Sequence[str] = BACKENDS) -> tuple[str, ...]:
    """Validate backend names against ``allowed``, keeping their order and dropping repeats.

    Raises:
        InvalidArgumentError: an unknown name.
    """
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise InvalidArgumentError(f"backend(s) {unknown or list(names)} not known; choose one or more of "
                                   f"{list(allowed)}, e.g. edge and onnxruntime.")
    return tuple(dict.fromkeys(names))


def open_backend(name: str, files: ModelFiles, threads: int, sparsity: str = "auto") -> Runner:
    """Create the session of backend ``name`` and time its creation.

    Args:
        name: one of :data:`BACKENDS`.
        files: the model files.
        threads: intra-op threads for every backend.
        sparsity: edge_runtime's mode for the ``edge`` backend (``edge-dense`` is always "off").

    Raises:
        BackendUnavailableError: onnxruntime / ai-edge-litert not installed, or no .tflite file.
        EdgeRuntimeError: edge_runtime cannot load the model.
    """
    opener = {"edge": _edge, "edge-dense": _edge, "edge-numba": _edge, "onnxruntime": _onnxruntime,
              "litert": _litert}[name.removesuffix(INT8_SUFFIX)]
    if is_int8(name):
        files = _int8_files(name, files)
    t0 = time.perf_counter()
    runner = opener(name, files, threads, sparsity)
    return Runner(runner.name, runner.run, time.perf_counter() - t0, runner.session, runner.run_with_stats)


def _int8_files(name: str, files: ModelFiles) -> ModelFiles:
    """``files`` with the int8 model in place of the fp32 one (ONNX, or TFLite for ``litert-int8``)."""
    tflite = name.startswith("litert")
    model = files.int8_tflite if tflite else files.int8
    if model is None or not model.is_file():
        what = "int8 TFLite model (model.int8.tflite; needs the tflite format and ai-edge-quantizer at export)" \
            if tflite else "int8 model"
        raise BackendUnavailableError(
            f"backend {name!r} runs the bundle's {what}, and {files.onnx.parent} has none; re-export "
            f"with --quantize int8 (exporters.export(..., quantize='int8')) or drop {name!r}.")
    return dataclasses.replace(files, tflite=model) if tflite else dataclasses.replace(files, onnx=model)


def _edge(name: str, files: ModelFiles, threads: int, sparsity: str) -> Runner:
    import edge_runtime

    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = threads
    mode = "off" if name == "edge-dense" else sparsity
    providers = ["EdgeRuntimeExecutionProvider"] if name.startswith("edge-numba") else None
    golden = _golden_feeds(files)
    sess = edge_runtime.InferenceSession(files.session_source(files.onnx), opts, providers, sparsity=mode,
                                         warmup_feed=golden)
    if sess.line_check_pending:  # settled before timing: the timed runs see the plan the line keeps
        from edge_runtime.warmup import synthetic_feed

        sess.finish_line_check(golden or [synthetic_feed(sess.get_inputs())])

    return Runner(name, lambda feed: sess.run(None, feed), 0.0, sess,
                  lambda feed: sess.run_with_stats(None, feed))


def _golden_feeds(files: ModelFiles) -> list[dict[str, np.ndarray]] | None:
    """The bundle's first golden inputs as one-image feeds (what the model really sees), or None."""
    if files.golden is None or not files.golden.is_file():
        return None
    import onnx

    from edge_runtime.golden import warmup_feeds
    from edge_runtime.session import MAX_WARMUP_FEEDS

    try:
        name = files.input_name
        if name is None:
            graph = onnx.load(str(files.onnx), load_external_data=False).graph
            consts = {t.name for t in graph.initializer}
            name = [i.name for i in graph.input if i.name not in consts][0]
        return warmup_feeds(files.golden, name, MAX_WARMUP_FEEDS, files.content(files.golden))
    except (OSError, KeyError, ValueError, IndexError, EdgeRuntimeError) as exc:
        log.info("no warm-up input from %s (%s): synthetic input", files.golden, exc)
        return None


def _onnxruntime(name: str, files: ModelFiles, threads: int, sparsity: str) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend 'onnxruntime' needs the onnxruntime package, which is not importable ({exc}). "
            f"Install it (pip install onnxruntime) or drop it from the backends.") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(files.source(files.onnx), opts,
                                providers=["CPUExecutionProvider"])
    return Runner(name, lambda feed: sess.run(None, dict(feed)), 0.0, sess)


def _litert(name: str, files: ModelFiles, threads: int, sparsity: str) -> Runner:
    if files.tflite is None or not files.tflite.is_file():
        raise BackendUnavailableError(
            f"backend 'litert' needs a model.tflite next to {files.onnx.name} (a bundle directory with "
            f"model.tflite); none found in {files.onnx.parent}. Export one with the tflite exporter "
            f"or drop 'litert' from the backends.")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # frozen fallback (references.md §4)
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'litert' needs ai-edge-litert (pip install ai-edge-litert), which is not "
                "importable; or drop 'litert' from the backends.") from exc
    content = files.content(files.tflite)
    interp = Interpreter(model_content=content, num_threads=threads) if content is not None else \
        Interpreter(model_path=str(files.tflite), num_threads=threads)
    interp.allocate_tensors()
    ins = interp.get_input_details()
    outs = interp.get_output_details()

    def run(feed: Feed) -> list[np.ndarray]:
        # TFLite names differ from ONNX's: inputs are matched by position
        for detail, value in zip(ins, feed.values()):
            interp.set_tensor(detail["index"], quantize_tensor(np.asarray(value), detail))
        interp.invoke()
        return [dequantize_tensor(interp.get_tensor(d["index"]), d) for d in outs]

    return Runner(name, run, 0.0, interp)


def quantize_tensor(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """A float input for a quantized (int8) tensor: round(x / scale) + zero_point, saturated."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail.get("quantization") or (0.0, 0)
    if dtype.kind not in "iu" or not scale or x.dtype.kind in "iu":
        return np.asarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize_tensor(y: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """A quantized (int8) output as float32: (y - zero_point) * scale; other outputs unchanged."""
    scale, zero_point = detail.get("quantization") or (0.0, 0)
    if y.dtype.kind not in "iu" or not scale:
        return y
    return ((y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
