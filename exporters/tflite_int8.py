"""The int8 TFLite half of an int8 bundle: ai-edge-quantizer's static int8 recipe (docs/int8.md).

With ``quantize="int8"`` and the tflite format, :func:`add_tflite_int8` quantizes the fp32
``model.tflite`` with ai-edge-quantizer's ``static_wi8_ai8`` recipe (int8 weights per output
channel, int8 activations, int8 input and output tensors) and writes LiteRT's dequantized
outputs of it on golden.npz's inputs as its reference (``golden.int8.tflite.npz``). The
manifest's ``int8.tflite`` entry names both files and the tolerance the ``litert-int8``
backend is checked at.

Calibration: every sample runs through the fp32 model on its own and each tensor's range is
the *global* min/max over the calibration set. The library's default merges samples with a
moving average, which shrinks the ranges of rare large activations; on the demo model that
cost 4-5 accuracy points against 0 with the global range.

Known issue of ai-edge-quantizer 0.10: a Conv/FullyConnected output channel whose weights are
all zero loses its bias (the output is 0 instead of the bias). ``max_abs_vs_fp32`` in the
manifest (the int8 TFLite outputs against PyTorch's on the golden inputs) shows it, and a
warning is logged when it exceeds :data:`WARN_FRACTION` of the output range.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.contract import INT8_TFLITE_GOLDEN, INT8_TFLITE_MODEL
from edge_runtime.golden import save_golden
from exporters.errors import ExportError

log = logging.getLogger(__name__)

MODEL, GOLDEN = INT8_TFLITE_MODEL, INT8_TFLITE_GOLDEN
# LiteRT on another CPU may round a tie or a float sum to the other side of a half step, and one
# activation step propagates: 8 steps of the int8 output tensor, as for the int8 ONNX model
# (exporters.int8_bundle.GOLDEN_STEPS), while a changed weight moves outputs by far more.
GOLDEN_STEPS = 8
MAX_SAMPLES = 256  # calibration samples used at most, as for the ONNX quantizer
# Warn when the int8 outputs differ from PyTorch's by more than this fraction of the output range
# (the quantization error of a healthy int8 model is a few output steps, i.e. ~1-3% of it).
WARN_FRACTION = 0.1
RECIPE = "static_wi8_ai8"
INSTALL = "pip install 'ai-edge-quantizer>=0.10' (or the [tflite] extra)"


def quantizer_error() -> str | None:
    """Why ai-edge-quantizer cannot be used here (one line), or None when it can."""
    try:
        from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager  # noqa: F401
        from ai_edge_quantizer.utils import qsv_utils  # noqa: F401
    except ImportError as exc:
        return (f"int8 TFLite export needs ai-edge-quantizer, which is not importable ({exc}); "
                f"{INSTALL}, or drop 'tflite' from formats.")
    return None


def calibration_array(data: Any, max_samples: int = MAX_SAMPLES) -> NDArray[np.float32]:
    """The calibration inputs as one float32 array (N, ...): a SparsityReport's kept inputs,
    an array, or an iterable of arrays / (x, y) pairs / feeds (read as the ONNX quantizer reads them).

    Raises:
        ExportError: no data.
    """
    from exporters.quantize import calibration_feeds

    feeds = calibration_feeds(data, "x", None, max_samples)
    return np.ascontiguousarray(np.concatenate([next(iter(f.values())) for f in feeds]))


def quantize_tflite(flatbuffer: bytes, x: NDArray[np.float32]) -> bytes:
    """Quantize an fp32 TFLite model with ai-edge-quantizer's static int8 recipe.

    Args:
        flatbuffer: the fp32 .tflite bytes (one signature, one input, fixed batch).
        x: calibration inputs (N, ...), fed one model batch at a time; each tensor's range is the
            global min/max over all of them.

    Returns:
        The int8 .tflite bytes.

    Raises:
        ExportError: ai-edge-quantizer is missing or failed (its message kept).
    """
    reason = quantizer_error()
    if reason:
        raise ExportError(reason)
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    try:
        chosen = getattr(recipe, RECIPE)()
        qt = quantizer.Quantizer(flatbuffer)
        qt.load_quantization_recipe(chosen)
        manager = recipe_manager.RecipeManager()  # the Calibrator reads the recipe from its own manager
        manager.load_quantization_recipe(chosen)
        signature, name, batch = _signature(flatbuffer)
        feeds = [{name: x[i:i + batch]} for i in range(0, len(x) - batch + 1, batch)]
        # Quantizer.calibrate has no way to choose how samples merge; its Calibrator does
        cal = calibrator.Calibrator(flatbuffer, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar has no off switch; library code is silent
            cal.calibrate({signature: feeds}, manager)
        result = qt.quantize(cal.get_model_qsvs(), enable_progress_report=False)
        return bytes(result.quantized_model)
    except Exception as exc:  # the quantizer raises many unrelated types
        raise ExportError(f"ai-edge-quantizer ({RECIPE}) failed on model.tflite: {type(exc).__name__}: {exc}. "
                          f"Export with formats=('onnx', 'tflite?') to skip the int8 TFLite model.") from exc


def _signature(flatbuffer: bytes) -> tuple[str, str, int]:
    """The model's signature key, its input name and the input's fixed batch size."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    signatures = interp.get_signature_list()
    if len(signatures) != 1:
        raise ExportError(f"model.tflite has signatures {sorted(signatures)}; the int8 TFLite export takes a model "
                          f"with one signature. Export with formats=('onnx', 'tflite?') (CLI: --formats onnx,tflite?) "
                          f"to skip the int8 TFLite model; the int8 ONNX model is still written.")
    key, sig = next(iter(signatures.items()))
    if len(sig["inputs"]) != 1:
        raise ExportError(f"model.tflite has inputs {sig['inputs']}; the int8 TFLite export takes a model with one "
                          f"input. Export with formats=('onnx', 'tflite?') (CLI: --formats onnx,tflite?) to skip the "
                          f"int8 TFLite model; the int8 ONNX model is still written.")
    shape = interp.get_input_details()[0]["shape"]
    return key, sig["inputs"][0], int(shape[0]) if len(shape) else 1


def litert_outputs(flatbuffer: bytes, x: NDArray[np.float32]) -> tuple[list[NDArray[np.float32]], float]:
    """LiteRT's dequantized outputs of an int8 model on ``x`` (one model batch per call) and the
    int8 output step (the largest output scale)."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.profiling.backends import dequantize_tensor, quantize_tensor

    interp = Interpreter(model_content=flatbuffer, num_threads=1)
    interp.allocate_tensors()
    ins, outs = interp.get_input_details()[0], interp.get_output_details()
    batch = int(ins["shape"][0]) if len(ins["shape"]) else 1
    rows: list[list[NDArray[np.float32]]] = []
    for i in range(0, len(x), batch):
        interp.set_tensor(ins["index"], quantize_tensor(x[i:i + batch], ins))
        interp.invoke()
        rows.append([dequantize_tensor(interp.get_tensor(d["index"]), d) for d in outs])
    step = max(float((d.get("quantization") or (0.0, 0))[0]) for d in outs)
    return [np.concatenate([r[k] for r in rows]) for k in range(len(outs))], step


def add_tflite_int8(folder: Path, calibration: Any, golden_x: NDArray[np.float32], output_names: Sequence[str],
                    fp32_outputs: Sequence[NDArray[Any]]) -> dict[str, Any]:
    """Write ``model.int8.tflite`` and ``golden.int8.tflite.npz`` next to ``folder/model.tflite``.

    Args:
        folder: the bundle being built (holds model.tflite).
        calibration: calibration inputs (see :func:`calibration_array`).
        golden_x: golden.npz's inputs.
        output_names: the model's output names, in order.
        fp32_outputs: PyTorch's outputs on ``golden_x`` (golden.npz), for ``max_abs_vs_fp32``.

    Returns:
        The manifest's ``int8.tflite`` entry (docs/bundle.md).

    Raises:
        ExportError: the quantizer is missing or failed.
    """
    x = calibration_array(calibration)
    flat = quantize_tflite((folder / "model.tflite").read_bytes(), x)
    (folder / MODEL).write_bytes(flat)
    outputs, step = litert_outputs(flat, golden_x)
    save_golden(folder / GOLDEN, golden_x, outputs, output_names)
    diff = max(float(np.abs(np.asarray(y, np.float64) - r).max()) for y, r in zip(outputs, fp32_outputs))
    spread = max(float(np.ptp(r)) if np.size(r) else 0.0 for r in fp32_outputs)
    if diff > WARN_FRACTION * spread:
        log.warning("int8 TFLite: outputs differ from PyTorch's by up to %.3g (%.0f%% of the output range %.3g) "
                    "on the golden inputs; ai-edge-quantizer 0.10 drops the bias of output channels whose "
                    "weights are all zero, check for such channels (docs/int8.md)", diff, 100 * diff / spread,
                    spread)
    from importlib.metadata import version
    log.info("int8 TFLite: %d bytes, %d calibration samples, max abs vs fp32 %.3g", len(flat), len(x), diff)
    return {"model": MODEL, "golden": GOLDEN,
            "quantizer": f"ai-edge-quantizer {version('ai-edge-quantizer')} {RECIPE}",
            "weights": "int8, symmetric, per output channel", "activation_type": "int8",
            "calibration": "global min/max over the samples", "calibration_samples": int(len(x)),
            "golden_atol": round(max(1e-3, GOLDEN_STEPS * step), 6), "max_abs_vs_fp32": round(diff, 6)}
