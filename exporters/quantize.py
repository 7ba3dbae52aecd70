"""Static int8 post-training quantization of an exported ONNX model (onnxruntime.quantization).

The quantizer is onnxruntime's ``quantize_static`` (QDQ format, per-channel int8 weights,
uint8 activations by default: a ReLU output then has zero point 0, the value the
zero-skipping int8 kernels skip). Calibration uses the same data that measured sparsity:
numpy batches, an iterable of arrays or feeds, or a :class:`exporters.calibrate.SparsityReport`
(its kept inputs). Nothing here writes a quantizer by hand.

Example::

    from exporters.quantize import quantize_model
    q = quantize_model("model.onnx", x_calib, "model.int8.onnx")   # x_calib: (N, C, H, W) float32
    q.activations["/features.2/Relu_output_0"].zero_point          # 0 for a uint8 ReLU output
"""
from __future__ import annotations

import collections
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

from exporters.errors import ExportError

log = logging.getLogger(__name__)

_TYPES = ("uint8", "int8")
_METHODS = ("minmax", "entropy", "percentile")
_CALIBRATION_BATCH = 32  # samples per calibration feed when the model's batch axis is symbolic


@dataclass(frozen=True)
class QuantParams:
    """Scale and zero point of one quantized activation (per tensor)."""

    scale: float
    zero_point: int
    dtype: str  # "uint8" or "int8"


@dataclass(frozen=True)
class QuantizedModel:
    """What :func:`quantize_model` wrote.

    Attributes:
        path: the int8 ONNX model (QDQ format).
        calibration_samples: how many samples the quantizer saw.
        activations: quantized activation tensor name -> its scale and zero point.
        op_counts: op type -> count in the quantized graph.
    """

    path: Path
    calibration_samples: int
    activations: Mapping[str, QuantParams] = field(default_factory=dict)
    op_counts: Mapping[str, int] = field(default_factory=dict)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ExportError(f"{name}={value!r} is not supported; expected one of {choices}.")


def _input_spec(model: onnx.ModelProto) -> tuple[str, int | None]:
    """The model's single graph input: its name and fixed batch size (None when symbolic).

    Raises:
        ExportError: the model has no input or several.
    """
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ExportError(f"quantize_model needs a model with one input, got {[i.name for i in inputs]}; "
                          f"pass calibration feeds as dicts (input name -> array) for several inputs.")
    dims = inputs[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    return inputs[0].name, batch


def calibration_feeds(data: Any, input_name: str, batch: int | None, max_samples: int = 256
                      ) -> list[dict[str, NDArray[np.float32]]]:
    """Calibration data as a list of feeds of ``batch`` samples each (all of them when batch is None).

    Args:
        data: an array (N, ...), an iterable of arrays or of (x, y) pairs or of feeds (dicts),
            or an object with an ``inputs`` array (a SparsityReport).
        input_name: the model's input name.
        batch: the model's fixed batch size; None when symbolic (feeds of 32 samples).
        max_samples: stop after this many samples.
    Returns:
        The feeds (float32).
    Raises:
        ExportError: no data.
    """
    if getattr(data, "inputs", None) is not None and not isinstance(data, np.ndarray):
        data = data.inputs
    if isinstance(data, np.ndarray) or hasattr(data, "numpy"):
        data = [np.asarray(data)]
    feeds: list[dict[str, NDArray[np.float32]]] = []
    seen = 0
    for item in data:
        if seen >= max_samples:
            break
        if isinstance(item, Mapping):
            feeds.append({k: np.asarray(v, np.float32) for k, v in item.items()})
            seen += len(next(iter(item.values())))
            continue
        x = np.asarray(item[0] if isinstance(item, (tuple, list)) else item, np.float32)[:max_samples - seen]
        step = batch or _CALIBRATION_BATCH
        stop = len(x) - len(x) % step if batch else len(x)  # a fixed batch takes whole batches only
        for i in range(0, stop, step):
            feeds.append({input_name: np.ascontiguousarray(x[i:i + step])})
            seen += len(feeds[-1][input_name])
    if not feeds:
        raise ExportError("quantize_model got no calibration data; pass the calibration batches that measured "
                          "sparsity (an array shaped (N, ...) with N >= the model's batch size).")
    return feeds


def _reader(feeds: list[dict[str, NDArray[np.float32]]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, NDArray[np.float32]]] = iter(feeds)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            return next(self._it, None)

    return _Feeds()


def activation_params(model: onnx.ModelProto) -> dict[str, QuantParams]:
    """Per-tensor scale/zero point of every QuantizeLinear output (the quantized activations)."""
    inits = {i.name: i for i in model.graph.initializer}
    params = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] not in inits or len(node.input) < 3:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        zp = numpy_helper.to_array(inits[node.input[2]]) if node.input[2] in inits else None
        if scale.size == 1 and zp is not None and zp.size == 1:
            params[node.input[0]] = QuantParams(float(scale), int(zp), str(zp.dtype))
    return params


def quantize_model(onnx_path: str | os.PathLike, calibration_batches: Any, out_path: str | os.PathLike, *,
                   activation_type: str = "uint8", per_channel: bool = True, calibrate_method: str = "minmax",
                   max_samples: int = 256, preprocess: bool = True) -> QuantizedModel:
    """Quantize an fp32 ONNX model to int8 (QDQ) with onnxruntime's static quantizer.

    Args:
        onnx_path: the fp32 model.
        calibration_batches: calibration inputs (see :func:`calibration_feeds`).
        out_path: where to write the int8 model.
        activation_type: "uint8" (default; ReLU outputs get zero point 0) or "int8".
        per_channel: per-output-channel weight scales.
        calibrate_method: "minmax", "entropy" or "percentile".
        max_samples: calibration samples used at most.
        preprocess: run onnxruntime's ``quant_pre_process`` (shape inference, graph
            optimisation: BatchNorm folding) first; skipped with a warning when it fails.
    Returns:
        A :class:`QuantizedModel` (path, activation scales and zero points, op counts).
    Raises:
        ExportError: bad arguments, no calibration data, or onnxruntime.quantization failed
            or is not installed.
    """
    _check_choice("activation_type", activation_type, _TYPES)
    _check_choice("calibrate_method", calibrate_method, _METHODS)
    try:
        from onnxruntime import quantization as q
    except ImportError as exc:
        raise ExportError("int8 export needs onnxruntime (pip install onnxruntime); it is not installed.") from exc
    name, batch = _input_spec(onnx.load(str(onnx_path), load_external_data=False))
    feeds = calibration_feeds(calibration_batches, name, batch, max_samples)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = _preprocessed(str(onnx_path), Path(tmp) / "pre.onnx") if preprocess else str(onnx_path)
        method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                  "percentile": q.CalibrationMethod.Percentile}[calibrate_method]
        qtype = q.QuantType.QUInt8 if activation_type == "uint8" else q.QuantType.QInt8
        try:
            q.quantize_static(source, str(out_path), _reader(feeds), quant_format=q.QuantFormat.QDQ,
                              per_channel=per_channel, activation_type=qtype, weight_type=q.QuantType.QInt8,
                              calibrate_method=method)
        except Exception as exc:  # the quantizer raises many unrelated types
            raise ExportError(f"onnxruntime.quantization.quantize_static failed on '{onnx_path}': "
                              f"{type(exc).__name__}: {exc}. Check that the model runs in onnxruntime "
                              f"on the calibration data.") from exc
    model = onnx.load(str(out_path))
    counts = collections.Counter(n.op_type for n in model.graph.node)
    samples = sum(len(next(iter(f.values()))) for f in feeds)
    log.info("quantized %s -> %s on %d samples: %s", onnx_path, out_path, samples, dict(counts))
    return QuantizedModel(out_path, samples, activation_params(model), dict(counts))


def _preprocessed(src: str, dst: Path) -> str:
    """onnxruntime's quant_pre_process output, or ``src`` when it fails (logged)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(src, str(dst), skip_symbolic_shape=True)
        return str(dst)
    except Exception as exc:  # noqa: BLE001 - optional optimisation; quantize the original instead
        log.warning("quant_pre_process failed (%s: %s); quantizing the model as exported", type(exc).__name__, exc)
        return src


def accuracy_drop(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, x: NDArray[np.float32],
                  y: NDArray[np.int64], *, batch: int = 64, runner: str = "edge_runtime") -> dict[str, float]:
    """Top-1 accuracy of the fp32 and int8 models on labelled data, and how they differ.

    Args:
        fp32_path, int8_path: the two ONNX models (same input and output).
        x, y: inputs (N, ...) and integer labels (N,).
        batch: batch size (the model's fixed batch wins when it has one).
        runner: "edge_runtime" or "onnxruntime".
    Returns:
        ``{"fp32_accuracy", "int8_accuracy", "drop_points", "top1_agreement", "max_logit_error"}``,
        accuracies in percent.
    """
    name, fixed = _input_spec(onnx.load(str(fp32_path), load_external_data=False))
    step = fixed or batch
    logits = {}
    for key, path in (("fp32", fp32_path), ("int8", int8_path)):
        run = _session(str(path), runner)
        logits[key] = np.concatenate([run({name: x[i:i + step].astype(np.float32)})
                                      for i in range(0, len(x) - (len(x) % step if fixed else 0), step)])
    n = len(logits["fp32"])
    acc = {k: 100.0 * float(np.mean(v.argmax(1) == y[:n])) for k, v in logits.items()}
    return {"fp32_accuracy": acc["fp32"], "int8_accuracy": acc["int8"], "drop_points": acc["fp32"] - acc["int8"],
            "top1_agreement": 100.0 * float(np.mean(logits["fp32"].argmax(1) == logits["int8"].argmax(1))),
            "max_logit_error": float(np.abs(logits["fp32"] - logits["int8"]).max()), "samples": float(n)}


def _session(path: str, runner: str) -> Any:
    _check_choice("runner", runner, ("edge_runtime", "onnxruntime"))
    if runner == "onnxruntime":
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    else:
        import edge_runtime

        sess = edge_runtime.InferenceSession(path)
    return lambda feed: np.asarray(sess.run(None, feed)[0]).reshape(len(next(iter(feed.values()))), -1)
