"""edge_runtime: run ONNX models on edge CPUs, skipping inactive neurons."""
from __future__ import annotations

from edge_runtime.errors import (
    BundleError,
    EdgeRuntimeError,
    InvalidArgumentError,
    InvalidInputError,
    InvalidModelError,
    UnsupportedDTypeError,
    UnsupportedOpError,
)

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "EdgeRuntimeError",
    "InvalidArgumentError",
    "InvalidInputError",
    "InvalidModelError",
    "UnsupportedDTypeError",
    "UnsupportedOpError",
    "__version__",
]
