"""``export()``: write a deployment bundle (docs/bundle.md) atomically.

A bundle is a directory with ``manifest.json``, ``model.onnx``, ``model.tflite`` and
``golden.npz``. It is built in a temporary sibling directory and renamed into place, so
a failed export leaves nothing behind and readers never see half a bundle.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from torch import nn

import edge_runtime
from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.annotations import ANNOTATION_KEY
from exporters.annotations import (build_annotations, consumer_thresholds, to_json,
                                   write_onnx_annotations)
from edge_runtime.bundle import LoadedBundle, manifest_digest, sha256_of
from edge_runtime.golden import save_golden
from edge_runtime.contract import MANIFEST, MANIFEST_DIGEST, SIGNATURE, TASKS, Manifest
from exporters.calibrate import SparsityReport, calibrate, iter_batches, validate_preprocessing
from exporters.errors import ExportError
from exporters.int8_bundle import add_int8, check_quantize
from exporters.onnx_export import export_onnx, finalize, map_modules
from exporters.tasks import task_manifest
from exporters.tflite_export import add_metadata, convert_tflite
from exporters.tflite_int8 import GOLDEN as TFLITE_INT8_GOLDEN, MODEL as TFLITE_INT8_MODEL, add_tflite_int8

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FORMATS = ("onnx", "tflite")


#: What :func:`export` returns: the bundle as the device side reads it (paths, manifest, labels).
Bundle = LoadedBundle


def export(model: nn.Module, example_input: torch.Tensor, out_dir: str | os.PathLike, *,
           calibration: Any = None, formats: Sequence[str] = FORMATS,
           labels: Sequence[str] | None = None, preprocessing: dict | None = None,
           dynamic_batch: bool = True, overwrite: bool = False, opset: int | None = None,
           golden_samples: int = 16, name: str | None = None,
           dynamo: bool = True, target_sparsity: float | None = None,
           max_accuracy_drop: float = 0.5, eval_data: Any = None,
           per_channel_thresholds: bool = False, thresholds: Any = None,
           sign_key: str | os.PathLike | None = None, task: str | None = None,
           postprocess: dict[str, Any] | None = None, quantize: str | None = None) -> Bundle:
    """Export ``model`` to an annotated ONNX/TFLite bundle directory.

    Args:
        model: the PyTorch model (switched to eval for the export, then restored).
        example_input: one input batch (B, ...); the TFLite file keeps its shape.
        out_dir: the bundle directory to create.
        calibration: a :class:`SparsityReport`, data for :func:`calibrate`, or None
            (no annotation; golden set = ``example_input``).
        formats: any of "onnx", "tflite". A trailing "?" ("tflite?") means "if
            possible": a failed conversion is logged and skipped instead of raised.
        labels: class names, stored in the manifest.
        preprocessing: the input preprocessing (docs/bundle.md), stored in the manifest
            and used to read an image-directory ``calibration``.
        dynamic_batch: symbolic batch axis in the ONNX model.
        overwrite: replace an existing ``out_dir`` (atomically).
        opset: ONNX opset (default: the exporter's).
        golden_samples: how many calibration inputs go into ``golden.npz``.
        name: model name for the manifest (default: the class name).
        dynamo: use the dynamo ONNX exporter (False: TorchScript, opset 17).
        target_sparsity: if given, fit activation thresholds
            (:func:`exporters.thresholds.fit_thresholds`) on the ``calibration`` data and
            export the thresholded copy; ``model`` itself is not modified.
        max_accuracy_drop: the thresholds' metric budget in percentage points.
        eval_data: labelled (x, y) data for the accuracy metric; None = top-1
            agreement with ``model`` on the calibration data.
        per_channel_thresholds: one threshold per channel instead of per layer.
        thresholds: a precomputed ``ThresholdResult``: export its ``.model`` instead of
            fitting (exclusive with ``target_sparsity``).
        sign_key: an Ed25519 private key file; the manifest is signed (manifest.sig).
        task: classification, detection, segmentation or anomaly (docs/tasks.md); None
            infers it from the output shapes where they leave no doubt.
        postprocess: the task's postprocess keys (docs/bundle.md); missing ones are filled
            from the outputs and labels; for anomaly the threshold is fitted on
            ``calibration`` (good parts) at ``postprocess["target_fpr"]`` (default 0.01).
        quantize: "int8" adds ``model.int8.onnx`` (onnxruntime's static quantizer, QDQ, on
            ``calibration``), annotated, with its own ``golden.int8.npz``, and with the tflite
            format ``model.int8.tflite`` (ai-edge-quantizer's static int8 recipe) with
            ``golden.int8.tflite.npz`` (docs/int8.md).

    Returns:
        The written :class:`Bundle`.

    Raises:
        BundleError: ``out_dir`` exists and ``overwrite`` is False.
        InvalidArgumentError: bad formats, preprocessing, golden_samples, sign_key, an
            unknown task, or outputs that do not say the task when ``task`` is None.
        ExportError: a converter failed, a module could not be mapped, thresholds or int8
            were asked for without calibration data (or could not be fitted), or onnxruntime
            (or, with the tflite format required, ai-edge-quantizer) is missing for ``quantize``.
    """
    out = Path(out_dir)
    wanted = _parse_formats(formats)
    if out.exists() and not overwrite:
        raise BundleError(f"Bundle directory {str(out)!r} already exists; pass "
                          "overwrite=True (--overwrite) or choose another path.")
    if golden_samples < 1:
        raise InvalidArgumentError(f"golden_samples={golden_samples}; expected >= 1.")
    if task is not None and task not in TASKS:
        raise InvalidArgumentError(f"task={task!r}; expected one of {list(TASKS)} (CLI: --task).")
    if preprocessing is not None:
        preprocessing = validate_preprocessing(preprocessing)
    tflite_int8 = check_quantize(quantize, wanted)
    if quantize is not None and (calibration is None or "onnx" not in wanted):
        raise ExportError(f"quantize={quantize!r} needs calibration data (calibration=, CLI: --calib) and the "
                          f"onnx format (got formats {sorted(wanted)}): the quantizer calibrates the ONNX model "
                          f"on the data that measures sparsity.")
    if sign_key is not None:
        from edge_runtime.trust import sign_manifest

        sign_manifest(b"", sign_key)  # a bad key fails now, not after minutes of export
    was_training = model.training
    model.eval()
    try:
        fitted, calibration = _fit(model, calibration, preprocessing, thresholds,
                                   target_sparsity, max_accuracy_drop, eval_data,
                                   per_channel_thresholds)
        exported = fitted.model if fitted is not None else model
        report = _calibration(exported, calibration, preprocessing)
        layer_thr = consumer_thresholds(fitted.thresholds, fitted.consumers) if fitted else None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            int8_data = None if quantize is None else _int8_calibration(calibration, preprocessing)
            manifest = _write(exported, example_input, tmp, report, wanted, dynamic_batch,
                              opset, golden_samples, dynamo, layer_thr, int8_data, tflite_int8)
            if fitted is not None and manifest["sparsity"] is not None:
                manifest["sparsity"]["thresholds"] = _threshold_summary(
                    fitted, target_sparsity, max_accuracy_drop, per_channel_thresholds)
            manifest.update(name=name or type(model).__name__, labels=list(labels or []),
                            preprocessing=preprocessing)
            manifest.update(task_manifest(task, postprocess, manifest["outputs"], list(labels or []),
                                          model=exported, calibration=calibration,
                                          preprocessing=preprocessing))
            spec = _write_manifest(tmp, manifest, sign_key)
            _replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        model.train(was_training)
    return Bundle(path=out, manifest=json.loads((out / MANIFEST).read_text()), verified=True, spec=spec)


def _write_manifest(folder: Path, manifest: dict[str, Any], sign_key: Any) -> Manifest:
    """Check the manifest against the contract, write it, its digest and its signature."""
    spec = Manifest.from_json(manifest, str(folder / MANIFEST))  # never write what a device rejects
    data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    (folder / MANIFEST).write_bytes(data)
    (folder / MANIFEST_DIGEST).write_text(manifest_digest(data), encoding="ascii")
    if sign_key is not None:
        from edge_runtime.trust import sign_manifest

        (folder / SIGNATURE).write_bytes(sign_manifest(data, sign_key))
    return spec


def _parse_formats(formats: Sequence[str]) -> dict[str, bool]:
    """format -> required (False for 'if possible', written 'tflite?')."""
    if isinstance(formats, str):
        formats = formats.split(",")
    parsed = {f.rstrip("?"): not f.endswith("?") for f in formats}
    unknown = sorted(set(parsed) - set(FORMATS))
    if unknown or not parsed:
        raise InvalidArgumentError(f"formats={list(formats)!r}: unknown {unknown}; expected "
                                   f"one or more of {list(FORMATS)} (suffix '?' = if possible).")
    return parsed


def _fit(model: nn.Module, calibration: Any, preprocessing: dict | None, precomputed: Any,
         target: float | None, budget: float, eval_data: Any, per_channel: bool
         ) -> tuple[Any, Any]:
    """(ThresholdResult or None, calibration data to measure the exported model on)."""
    if target is None and precomputed is None:
        return None, calibration
    from exporters.thresholds import ThresholdResult, fit_thresholds

    asked = f"target_sparsity={target}" if target is not None else "thresholds="
    if target is not None and precomputed is not None:
        raise ExportError("export: pass either target_sparsity (fit thresholds now) or "
                          "thresholds (a precomputed ThresholdResult), not both.")
    if calibration is None or isinstance(calibration, SparsityReport):
        got = "no calibration" if calibration is None else "a precomputed SparsityReport"
        raise ExportError(
            f"export({asked}) needs calibration data to fit thresholds and to measure the "
            f"thresholded model, but got {got}; pass calibration= a tensor/array (N, ...), "
            ".npy file, image directory or DataLoader (CLI: --calib).")
    batches = list(iter_batches(calibration, preprocessing, 32))  # read files once
    if precomputed is not None:
        if not isinstance(precomputed, ThresholdResult):
            raise ExportError(f"export: thresholds is a {type(precomputed).__name__}; "
                              "expected the ThresholdResult returned by fit_thresholds.")
        return precomputed, batches
    result = fit_thresholds(model, batches, target_sparsity=target, max_accuracy_drop=budget,
                            eval_data=eval_data, per_channel=per_channel)
    logger.info("export: thresholds on %d activations, %s %.2f -> %.2f", len(result.thresholds),
                result.metric_name, result.metric_before, result.metric_after)
    return result, batches


def _threshold_summary(result: Any, target: float | None, budget: float,
                       per_channel: bool) -> dict[str, Any]:
    """The manifest's record of the fitted thresholds (docs/bundle.md)."""
    fitted = target is not None
    return {
        "source": "fit_thresholds" if fitted else "precomputed",
        "target_sparsity": target, "max_accuracy_drop": budget if fitted else None,
        "per_channel": per_channel if fitted else None,
        "metric": result.metric_name, "metric_before": round(float(result.metric_before), 4),
        "metric_after": round(float(result.metric_after), 4),
        "backoffs": [{k: (round(float(v), 6) if isinstance(v, float) else v)
                      for k, v in step.items()} for step in result.backoffs],
        "activations": {
            name: {"threshold": result.thresholds.get(name),
                   "consumers": list(result.consumers.get(name, [])),
                   "sparsity_before": round(float(result.sparsity_before.get(name, 0.0)), 6),
                   "sparsity_after": round(float(result.sparsity.get(name, 0.0)), 6)}
            for name in result.sparsity},
    }


def _calibration(model: nn.Module, calibration: Any, preprocessing: dict | None
                 ) -> SparsityReport | None:
    if calibration is None or isinstance(calibration, SparsityReport):
        return calibration
    return calibrate(model, calibration, preprocessing=preprocessing)


def _int8_calibration(calibration: Any, preprocessing: dict | None) -> Any:
    """What the int8 quantizer calibrates on: the report's kept inputs, or numpy batches of the data."""
    if isinstance(calibration, SparsityReport):
        return calibration
    return [b.numpy() for b in iter_batches(calibration, preprocessing, 32)]  # read by two quantizers


def _replace(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an existing ``out`` is swapped out, then deleted."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / "bundle")
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old / "bundle", out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write(model: nn.Module, example: torch.Tensor, tmp: Path, report: SparsityReport | None,
           wanted: dict[str, bool], dynamic_batch: bool, opset: int | None,
           golden_samples: int, dynamo: bool,
           layer_thr: dict[str, Any] | None = None, int8_data: Any = None,
           tflite_int8: bool = False) -> dict[str, Any]:
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION}
    doc = None
    if "onnx" in wanted:
        proto, doc = _onnx_with_annotations(model, example, report, dynamic_batch, opset,
                                            dynamo, layer_thr)
        onnx.save(proto, tmp / "model.onnx")
        manifest["inputs"] = _io_specs(proto.graph.input, proto)
        manifest["outputs"] = _io_specs(proto.graph.output, proto)
    if "tflite" in wanted:
        _write_tflite(model, example, tmp / "model.tflite", doc, report, wanted["tflite"])
    golden_x = _golden_inputs(report, example, golden_samples)
    outputs = _torch_outputs(model, golden_x)
    names = [o["name"] for o in manifest.get("outputs", [])] or [
        f"output_{i}" for i in range(len(outputs))]
    save_golden(tmp / "golden.npz", golden_x, outputs, names)
    if int8_data is not None:
        manifest["int8"] = add_int8(tmp, int8_data, golden_x, names, doc)
        if tflite_int8 and (tmp / "model.tflite").is_file():
            _write_tflite_int8(tmp, int8_data, golden_x, names, outputs, manifest["int8"], wanted["tflite"])
    manifest.setdefault("inputs", [_spec("input", example.shape, dynamic_batch)])
    manifest.setdefault("outputs", [_spec(n, y.shape, dynamic_batch)
                                    for n, y in zip(names, outputs)])
    manifest["sparsity"] = _summary(doc, report)
    manifest["files"] = {p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size}
                         for p in sorted(tmp.iterdir())}
    manifest["versions"] = {"torch": torch.__version__, "onnx": onnx.__version__,
                            "exporter": edge_runtime.__version__}
    manifest["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return manifest


def _onnx_with_annotations(model: nn.Module, example: torch.Tensor,
                           report: SparsityReport | None, dynamic_batch: bool,
                           opset: int | None, dynamo: bool,
                           layer_thr: dict[str, Any] | None = None
                           ) -> tuple[onnx.ModelProto, dict | None]:
    proto = export_onnx(model, example, dynamic_batch=dynamic_batch, opset=opset,
                        dynamo=dynamo)
    doc = None
    if report is not None:
        nodes = map_modules(proto, [(s.module, s.weight_shape) for s in report.layers])
        doc = build_annotations(report, nodes, layer_thr)
    finalize(proto)
    if doc is not None:
        write_onnx_annotations(proto, doc)
    return proto, doc


def _write_tflite(model: nn.Module, example: torch.Tensor, path: Path, doc: dict | None,
                  report: SparsityReport | None, required: bool) -> None:
    try:
        flat = convert_tflite(model, example)
    except ExportError as exc:
        if required:
            raise
        logger.warning("Skipping TFLite (asked 'if possible'): %s", exc)
        return
    if doc is None and report is not None:  # TFLite only: no ONNX node names to map
        doc = build_annotations(report, {})
    if doc is not None:
        flat = add_metadata(flat, ANNOTATION_KEY, to_json(doc).encode())
    path.write_bytes(flat)


def _write_tflite_int8(tmp: Path, data: Any, golden_x: np.ndarray, names: list[str], outputs: list[np.ndarray],
                       section: dict[str, Any], required: bool) -> None:
    """The int8 TFLite model into ``section["tflite"]``; skipped with a warning when it fails and
    tflite was asked 'if possible'."""
    try:
        section["tflite"] = add_tflite_int8(tmp, data, golden_x, names, outputs)
    except ExportError as exc:
        if required:
            raise
        logger.warning("Skipping the int8 TFLite model (asked 'if possible'): %s", exc)
        for name in (TFLITE_INT8_MODEL, TFLITE_INT8_GOLDEN):
            (tmp / name).unlink(missing_ok=True)


def _golden_inputs(report: SparsityReport | None, example: torch.Tensor, count: int
                   ) -> np.ndarray:
    if report is not None and report.inputs is not None:
        return report.inputs[:count].astype(np.float32)
    return example.detach().cpu().numpy().astype(np.float32)[:count]


def _torch_outputs(model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().numpy() for o in out]


def _io_specs(values: Any, proto: onnx.ModelProto) -> list[dict[str, Any]]:
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        specs.append({"name": value.name, "shape": shape, "dtype": dtype})
    return specs


def _spec(name: str, shape: Sequence[int], dynamic_batch: bool) -> dict[str, Any]:
    dims: list[Any] = list(shape)
    if dynamic_batch and dims:
        dims[0] = "batch"
    return {"name": name, "shape": dims, "dtype": "float32"}


def _summary(doc: dict | None, report: SparsityReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    layers = [{"module": s.module, "density": round(s.density, 6)} for s in report.layers]
    if doc is not None:
        by_module = {layer["module"]: layer for layer in doc["layers"]}
        for layer in layers:
            layer["node"] = by_module.get(layer["module"], {}).get("node")
            layer["threshold"] = by_module.get(layer["module"], {}).get("threshold")
    return {"samples": report.samples, "mean_density": round(report.mean_density, 6),
            "layers": layers}
