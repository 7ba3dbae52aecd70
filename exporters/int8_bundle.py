"""The int8 half of a bundle: ``export(..., quantize="int8")`` (docs/int8.md, docs/bundle.md).

After the fp32 ``model.onnx`` is written, :func:`add_int8` quantizes it with onnxruntime's
static quantizer (:func:`exporters.quantize.quantize_model`: QDQ, per-channel int8 weights,
uint8 activations) on the calibration data that measured sparsity, annotates the int8 graph
(each Conv/Gemm/MatMul input: the fp32 layer's measured density, and the scale and zero point
of the quantized activation feeding it: the value the int8 kernels skip), and writes
onnxruntime's outputs of the int8 model on the golden inputs as the int8 reference
(``golden.int8.npz``, same keys as ``golden.npz``). The manifest's ``int8`` section names both
files and the tolerance an int8 backend is checked at.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from numpy.typing import NDArray

from exporters.annotations import to_json, write_onnx_annotations
from exporters.errors import ExportError
from exporters.quantize import QuantizedModel, quantize_model
from edge_runtime.annotations import parse_annotations
from edge_runtime.contract import INT8_GOLDEN, INT8_MODEL
from edge_runtime.golden import save_golden

log = logging.getLogger(__name__)

MODEL, GOLDEN = INT8_MODEL, INT8_GOLDEN
QUANTIZE_CHOICES = ("int8",)
# An int8 backend may differ from onnxruntime's int8 outputs by rounding: a tie or a float
# sum that lands on the other side of a half step moves one activation by one step, and
# that propagates. GOLDEN_STEPS output steps of the int8 model (the spread of its golden
# outputs / 255) bound that on the models measured (docs/int8.md) while a changed weight
# moves outputs by far more.
GOLDEN_STEPS = 8


def check_quantize(quantize: str | None, formats: Mapping[str, bool] | None = None) -> bool:
    """Fail before any work on a bad ``quantize`` or a missing quantizer.

    Args:
        quantize: None or "int8".
        formats: format -> required (exporters.bundle's parsed ``formats``).

    Returns:
        Whether to write the int8 TFLite model too: "int8" with the tflite format and
        ai-edge-quantizer importable (an optional "tflite?" without it: False, with a warning).

    Raises:
        ExportError: not None or "int8", onnxruntime.quantization is not importable, or
            ai-edge-quantizer is not importable while the tflite format is required.
    """
    if quantize is None:
        return False
    if quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"quantize={quantize!r} is not supported; expected one of {list(QUANTIZE_CHOICES)} "
                          f"or None (CLI: --quantize int8).")
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"quantize='int8' uses onnxruntime's quantizer, which is not importable ({exc}); "
                          f"pip install onnxruntime, or export without --quantize.") from exc
    if not formats or "tflite" not in formats:
        return False
    from exporters.tflite_int8 import quantizer_error

    reason = quantizer_error()
    if reason and formats["tflite"]:
        raise ExportError(reason)
    if reason:
        log.warning("Skipping the int8 TFLite model (tflite asked 'if possible'): %s", reason)
    return reason is None


def add_int8(folder: Path, calibration: Any, golden_x: NDArray[np.float32], output_names: Sequence[str],
             fp32_doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """Write ``model.int8.onnx`` and ``golden.int8.npz`` next to ``folder/model.onnx``.

    Args:
        folder: the bundle being built (holds model.onnx).
        calibration: calibration inputs (an array (N, ...), batches, or a SparsityReport).
        golden_x: golden.npz's inputs.
        output_names: the model's output names, in order.
        fp32_doc: the fp32 model's sparsity annotation (None: the int8 model gets none).

    Returns:
        The manifest's ``int8`` section (docs/bundle.md).

    Raises:
        ExportError: quantization failed or onnxruntime cannot run the int8 model.
    """
    q = quantize_model(folder / "model.onnx", calibration, folder / MODEL)
    model = onnx.load(str(q.path))
    annotated = 0
    if fp32_doc is not None:
        doc = int8_annotations(fp32_doc, model, q)
        annotated = len(doc["layers"])
        write_onnx_annotations(model, doc)
        onnx.save(model, str(q.path))
    outputs = _onnxruntime_outputs(q.path, golden_x)
    save_golden(folder / GOLDEN, golden_x, outputs, output_names)
    spread = max(float(np.ptp(y)) if y.size else 0.0 for y in outputs)
    log.info("int8: %s, %d annotated layers, golden outputs from onnxruntime", dict(q.op_counts), annotated)
    return {"model": MODEL, "golden": GOLDEN, "format": "QDQ", "activation_type": "uint8",
            "weights": "int8, symmetric, per output channel",
            "quantizer": "onnxruntime.quantization.quantize_static (MinMax)",
            "calibration_samples": q.calibration_samples,
            "golden_atol": round(max(1e-3, GOLDEN_STEPS * spread / 255.0), 6),
            "annotated_layers": annotated, "op_counts": dict(sorted(q.op_counts.items()))}


def _onnxruntime_outputs(path: Path, x: NDArray[np.float32]) -> list[NDArray[Any]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        fixed = sess.get_inputs()[0].shape[0]
        if isinstance(fixed, int) and fixed != len(x):  # a fixed batch: one row at a time
            rows = [sess.run(None, {name: x[i:i + 1]}) for i in range(len(x))]
            return [np.concatenate([r[k] for r in rows]) for k in range(len(rows[0]))]
        return list(sess.run(None, {name: x}))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot run the int8 model it quantized ({type(exc).__name__}: {exc}); "
                          f"export without --quantize and report the model.") from exc


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _quantized_source(tensor: str, producers: Mapping[str, onnx.NodeProto]) -> str | None:
    """The fp32 tensor behind ``tensor`` = DequantizeLinear(QuantizeLinear(fp32)), else None."""
    dq = producers.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    qn = producers.get(dq.input[0])
    return qn.input[0] if qn is not None and qn.op_type == "QuantizeLinear" else None


def int8_annotations(fp32_doc: Mapping[str, Any], model: onnx.ModelProto, q: QuantizedModel) -> dict[str, Any]:
    """The fp32 annotation carried over to the int8 graph.

    A layer is matched by node name (the quantizer keeps it) or else by the fp32 tensor its
    quantized input comes from; its ``input`` becomes the int8 graph's (the DequantizeLinear
    output), and ``zero_point``/``scale``/``activation_dtype`` say how that input is quantized.
    The int8 input is at its zero point exactly where the fp32 input is 0 (values below half
    a step round to it too), so the fp32 density is what the int8 kernels see.

    Args:
        fp32_doc: the fp32 model's annotation document.
        model: the int8 model.
        q: what the quantizer wrote (activation scales and zero points).

    Returns:
        The int8 model's annotation document (checked by the runtime's reader).
    """
    producers = _producers(model)
    by_name = {n.name: n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    by_source = {_quantized_source(n.input[0], producers): n for n in by_name.values()}
    layers = []
    for layer in fp32_doc["layers"]:
        node = by_name.get(layer["node"]) or by_source.get(layer["input"])
        if node is None or node.op_type != layer["op_type"]:
            log.info("int8 annotation: layer %s has no %s in the int8 graph", layer["node"], layer["op_type"])
            continue
        source = _quantized_source(node.input[0], producers)
        params = q.activations.get(source) if source else None
        entry = {**layer, "node": node.name, "input": node.input[0]}
        if params is not None:
            entry.update(zero_point=params.zero_point, scale=round(params.scale, 9), activation_dtype=params.dtype)
        layers.append(entry)
    doc = {**fp32_doc, "layers": layers, "int8": True}
    parse_annotations(to_json(doc))  # never write what the runtime would reject
    return doc

