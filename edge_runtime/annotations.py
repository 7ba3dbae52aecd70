"""Read the sparsity annotation written by the exporters (schema: docs/annotations.md).

Torch-free: the runtime uses this on the device to pick dense or sparse kernels per layer.
"""
from __future__ import annotations

import json
from typing import Any

import onnx

from edge_runtime.contract import ANNOTATION_VERSIONS, Annotations
from edge_runtime.errors import InvalidModelError

#: Key in ``ModelProto.metadata_props`` and name of the TFLite ``Model.metadata`` entry.
ANNOTATION_KEY = "edge_runtime.sparsity"
#: Schema versions this reader understands.
SUPPORTED_VERSIONS = ANNOTATION_VERSIONS


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


def read_annotation_doc(model: onnx.ModelProto) -> Annotations | None:
    """The typed annotation (:class:`~edge_runtime.contract.Annotations`) of a model, or None.

    ``read_annotation_doc(model).density(node_name)`` is the annotated input density of a layer.

    Raises:
        InvalidModelError: as :func:`read_annotations`.
    """
    doc = read_annotations(model)
    return None if doc is None else Annotations.from_json(doc)


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
    Annotations.from_json(doc)  # the typed contract checks every key
    return doc

