"""Convert a PyTorch model to TFLite with litert-torch and embed the sparsity annotation.

The annotation is a ``Model.metadata`` entry named ``edge_runtime.sparsity`` whose buffer
holds the JSON text (references.md §4, docs/annotations.md).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from edge_runtime.annotations import ANNOTATION_KEY
from exporters.errors import ExportError

logger = logging.getLogger(__name__)

_FILE_IDENTIFIER = b"TFL3"


def convert_tflite(model: nn.Module, example: torch.Tensor) -> bytes:
    """Convert ``model`` (eval mode) to a TFLite flatbuffer with the example's fixed shape.

    Args:
        model: the model in eval mode.
        example: the example input; its shape (NCHW for images) is baked into the file.

    Returns:
        The .tflite bytes.

    Raises:
        ExportError: litert-torch is missing or the conversion failed (its message kept).
    """
    try:
        import litert_torch
    except ImportError as exc:
        raise ExportError("TFLite export needs litert-torch: pip install litert-torch "
                          "ai-edge-litert (or drop 'tflite' from formats).") from exc
    import tempfile

    try:
        edge_model = litert_torch.convert(model.eval(), (example,))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.tflite"
            edge_model.export(str(path))
            return path.read_bytes()
    except Exception as exc:  # the converter raises many unrelated types
        raise ExportError(
            f"litert-torch could not convert {type(model).__name__} with input shape "
            f"{tuple(example.shape)}: {type(exc).__name__}: {exc}. Export ONNX only "
            "(formats=('onnx',)) or make the model torch.export-able."
        ) from exc


def add_metadata(flatbuffer: bytes, name: str, data: bytes) -> bytes:
    """Return ``flatbuffer`` with a ``Model.metadata`` entry ``name`` -> ``data``.

    An existing entry with the same name is replaced.

    Raises:
        ExportError: the model keeps tensor data outside the flatbuffer (buffer offsets,
            used for > 2 GB models), which re-packing would lose.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    if any((b.offset or 0) > 1 for b in model.buffers or []):
        raise ExportError("The TFLite model stores buffers outside the flatbuffer "
                          "(> 2 GB model); adding metadata is not supported for it.")
    model.metadata = [m for m in (model.metadata or [])
                      if _text(m.name) != name]
    buffer = schema.BufferT()
    buffer.data = list(data)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())


def read_metadata(flatbuffer: bytes, name: str = ANNOTATION_KEY) -> bytes | None:
    """Return the bytes of the ``Model.metadata`` entry ``name``, or None if absent."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(flatbuffer), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
