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
from edge_runtime.executor import NodeStats, RunStats
from edge_runtime.ops.registry import supported_ops
from edge_runtime.options import (
    ORT_DISABLE_ALL,
    ORT_ENABLE_ALL,
    ORT_ENABLE_BASIC,
    ORT_ENABLE_EXTENDED,
    SessionOptions,
)
from edge_runtime.session import InferenceSession, ModelMetadata, NodeArg

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
]
