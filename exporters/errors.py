"""Errors raised by the exporters (PyTorch side)."""
from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class ExportError(EdgeRuntimeError):
    """Exporting a model failed: the converter rejected it, a module could not be mapped
    to an ONNX node, or the exported file does not reproduce PyTorch's outputs."""
