"""Read the sparsity annotation written by the exporters (schema: docs/annotations.md).

Torch-free: the runtime uses this on the device to pick dense or sparse kernels per layer.
"""
from __future__ import annotations

import json
from typing import Any

import onnx

from edge_runtime.errors import InvalidModelError

#: Key in ``ModelProto.metadata_props`` and name of the TFLite ``Model.metadata`` entry.
ANNOTATION_KEY = "edge_runtime.sparsity"
#: Schema versions this reader understands.
SUPPORTED_VERSIONS = (1,)

_LAYER_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "node": str,
    "input": str,
    "op_type": str,
    "density": (int, float),
}


def read_annotations(model: onnx.ModelProto) -> dict[str, Any] | None:
    """Return the validated sparsity annotation of an ONNX model, or None if it has none.

    Args:
        model: a loaded ONNX model.

    Returns:
        The parsed JSON document (``{"version": 1, "layers": [...], ...}``), or ``None``
        when ``metadata_props`` has no ``edge_runtime.sparsity`` entry.

    Raises:
        InvalidModelError: the entry is not JSON, has an unknown ``version``, or a layer
            misses a required key or has a value of the wrong type.
    """
    for prop in model.metadata_props:
        if prop.key == ANNOTATION_KEY:
            return parse_annotations(prop.value)
    return None


def parse_annotations(text: str | bytes) -> dict[str, Any]:
    """Parse and validate an annotation JSON document (ONNX or TFLite payload).

    Args:
        text: the JSON text (str or UTF-8 bytes).

    Returns:
        The parsed document.

    Raises:
        InvalidModelError: malformed JSON, unknown version or a bad layer entry.
    """
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModelError(
            f"The '{ANNOTATION_KEY}' annotation is not valid JSON ({exc}); expected the "
            "document described in docs/annotations.md. Re-export the model."
        ) from exc
    if not isinstance(doc, dict):
        raise InvalidModelError(
            f"The '{ANNOTATION_KEY}' annotation is a {type(doc).__name__}, expected a JSON "
            "object. Re-export the model."
        )
    version = doc.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise InvalidModelError(
            f"Sparsity annotation version {version!r} is not supported; this runtime reads "
            f"versions {list(SUPPORTED_VERSIONS)}. Upgrade edge_runtime or re-export with a "
            "matching exporter."
        )
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidModelError(
            f"Sparsity annotation 'layers' is {type(layers).__name__}, expected a list. "
            "Re-export the model."
        )
    for index, layer in enumerate(layers):
        _validate_layer(index, layer)
    return doc


def _validate_layer(index: int, layer: Any) -> None:
    if not isinstance(layer, dict):
        raise InvalidModelError(
            f"Sparsity annotation layer #{index} is {type(layer).__name__}, expected an "
            "object. Re-export the model."
        )
    for key, kind in _LAYER_REQUIRED.items():
        value = layer.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidModelError(
                f"Sparsity annotation layer #{index} has {key}={value!r}; expected a "
                f"{getattr(kind, '__name__', 'number')}. Re-export the model."
            )
    density = float(layer["density"])
    if not 0.0 <= density <= 1.0:
        raise InvalidModelError(
            f"Sparsity annotation layer #{index} ({layer['node']}) has density={density}; "
            "expected a fraction in [0, 1]. Re-export the model."
        )
    threshold = layer.get("threshold")
    if threshold is not None and (isinstance(threshold, bool)
                                  or not isinstance(threshold, (int, float))):
        raise InvalidModelError(
            f"Sparsity annotation layer #{index} ({layer['node']}) has "
            f"threshold={threshold!r}; expected null or a number. Re-export the model."
        )
    _validate_per_channel(index, layer)


def _validate_per_channel(index: int, layer: dict[str, Any]) -> None:
    """Optional ``thresholds``: a list of numbers (per-channel activation thresholds)."""
    values = layer.get("thresholds")
    if values is None:
        return
    if not isinstance(values, list) or not values or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise InvalidModelError(
            f"Sparsity annotation layer #{index} ({layer['node']}) has "
            f"thresholds={values!r}; expected absent, null or a non-empty list of numbers. "
            "Re-export the model."
        )
