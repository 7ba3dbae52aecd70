"""edge_runtime: run ONNX models on edge CPUs, skipping inactive neurons.

The API is shaped like onnxruntime's, so switching costs one import line::

    import edge_runtime as ort
    sess = ort.InferenceSession("model.onnx")
    y = sess.run(None, {"input": x})[0]
"""
from __future__ import annotations

from edge_runtime.errors import (
    BundleError,
    EdgeRuntimeError,
    ExecutionError,
    InvalidArgumentError,
    InvalidInputError,
    InvalidModelError,
    UnsupportedDTypeError,
    UnsupportedOpError,
)
import importlib
from typing import Any

# eager and cheap (numpy loads on use); the function, not the submodule, is ``edge_runtime.warmup``
from edge_runtime.warmup import warmup

# The session, planner and kernels import numba (about a second): load them on first use, so
# that ``import edge_runtime.errors`` (used by the exporters and the CLI) stays cheap.
_LAZY = {
    "NodeStats": "edge_runtime.executor", "RunStats": "edge_runtime.executor",
    "supported_ops": "edge_runtime.ops.registry",
    "ORT_DISABLE_ALL": "edge_runtime.options", "ORT_ENABLE_ALL": "edge_runtime.options",
    "ORT_ENABLE_BASIC": "edge_runtime.options", "ORT_ENABLE_EXTENDED": "edge_runtime.options",
    "SessionOptions": "edge_runtime.options",
    "InferenceSession": "edge_runtime.session", "ModelMetadata": "edge_runtime.session",
    "NodeArg": "edge_runtime.session",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "EdgeRuntimeError",
    "ExecutionError",
    "InferenceSession",
    "InvalidArgumentError",
    "InvalidInputError",
    "InvalidModelError",
    "ModelMetadata",
    "NodeArg",
    "NodeStats",
    "ORT_DISABLE_ALL",
    "ORT_ENABLE_ALL",
    "ORT_ENABLE_BASIC",
    "ORT_ENABLE_EXTENDED",
    "RunStats",
    "SessionOptions",
    "UnsupportedDTypeError",
    "UnsupportedOpError",
    "__version__",
    "supported_ops",
    "warmup",
]
