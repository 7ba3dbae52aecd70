"""Build the sparsity annotation (docs/annotations.md) and write it into ONNX models.

The TFLite writer lives in :mod:`exporters.tflite_export`; the torch-free reader in
:mod:`edge_runtime.annotations`.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import onnx

import edge_runtime
from edge_runtime.annotations import ANNOTATION_KEY, parse_annotations
from exporters.calibrate import SparsityReport

SCHEMA_VERSION = 1
PRODUCER = f"edge-runtime exporters {edge_runtime.__version__}"


def consumer_thresholds(thresholds: Mapping[str, Any], consumers: Mapping[str, Sequence[str]]
                        ) -> dict[str, float | list[float]]:
    """Invert activation thresholds to the Linear/Conv layers they feed.

    Args:
        thresholds: activation module name -> threshold (a float, or a list per channel),
            as in ``ThresholdResult.thresholds``.
        consumers: activation module name -> the Linear/Conv module names its output
            feeds, as in ``ThresholdResult.consumers``.

    Returns:
        Consumer module name -> the threshold of the activation feeding it. A layer fed
        by several thresholded activations gets the smallest of their (minimum)
        thresholds as a float: below it every input value is zero.
    """
    fed: dict[str, list[Any]] = {}
    for act, value in thresholds.items():
        for consumer in consumers.get(act, ()):
            fed.setdefault(consumer, []).append(value)
    out: dict[str, float | list[float]] = {}
    for consumer, values in fed.items():
        if len(values) == 1 and isinstance(values[0], (list, tuple)):
            out[consumer] = [float(v) for v in values[0]]
        else:
            out[consumer] = min(_minimum(v) for v in values)
    return out


def _minimum(value: Any) -> float:
    return float(min(value)) if isinstance(value, (list, tuple)) else float(value)


def _threshold_fields(value: Any) -> dict[str, Any]:
    """``threshold`` (a float or None) plus ``thresholds`` (the list) when per channel."""
    if value is None:
        return {"threshold": None}
    if isinstance(value, (list, tuple)):
        return {"threshold": _round(min(value)), "thresholds": [_round(v) for v in value]}
    return {"threshold": _round(value)}


def build_annotations(report: SparsityReport, nodes: Mapping[str, onnx.NodeProto],
                      thresholds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Make the version-1 annotation document from a report and a module->node mapping.

    Args:
        report: calibration statistics.
        nodes: module name -> ONNX node (from :func:`exporters.onnx_export.map_modules`);
            report layers missing here are left out.
        thresholds: layer (consumer) module name -> the threshold of the activation
            feeding it (see :func:`consumer_thresholds`); None or absent = ``null``.

    Returns:
        The JSON-serialisable document (validated by the runtime's reader).

    Raises:
        InvalidModelError: the document would not pass the runtime's reader (a bug).
    """
    thresholds = thresholds or {}
    layers = []
    for stats in report.layers:
        node = nodes.get(stats.module)
        if node is None:
            continue
        layers.append({
            "node": node.name, "input": node.input[0], "op_type": node.op_type,
            "module": stats.module, "density": _round(stats.density),
            "density_p10": _round(stats.density_p10),
            "density_p50": _round(stats.density_p50),
            "density_p90": _round(stats.density_p90),
            "firing": {"hot_fraction": _round(stats.hot_fraction),
                       "cold_fraction": _round(stats.cold_fraction)},
            "relu_fed": stats.relu_fed,
            **_threshold_fields(thresholds.get(stats.module)),
        })
    doc = {"version": SCHEMA_VERSION, "producer": PRODUCER,
           "calibration": {"samples": report.samples,
                           "hot_threshold": report.hot_threshold,
                           "cold_threshold": report.cold_threshold},
           "layers": layers}
    parse_annotations(to_json(doc))  # never write what the runtime would reject
    return doc


def _round(value: float) -> float:
    return round(float(value), 6)


def to_json(doc: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON text of an annotation document."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def write_onnx_annotations(model: onnx.ModelProto, doc: Mapping[str, Any]) -> None:
    """Store ``doc`` under ``metadata_props['edge_runtime.sparsity']`` (replacing any)."""
    kept = [p for p in model.metadata_props if p.key != ANNOTATION_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept},
                                        ANNOTATION_KEY: to_json(doc)})
