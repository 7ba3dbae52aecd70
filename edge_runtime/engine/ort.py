"""onnxruntime as the dense engine: availability, session options, and segment steps.

onnxruntime is an optional dependency on the device (the ``ort`` extra): nothing here imports
it at module level, and :func:`available` answers without importing it.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import numpy as np
import onnx

#: What get_providers() reports: onnxruntime's CPU provider runs the dense segments,
#: edge_runtime's own kernels run islands (and everything on the numba-only path).
ORT_PROVIDER = "CPUExecutionProvider"
EDGE_PROVIDER = "EdgeRuntimeExecutionProvider"


class OnnxRuntimeRejected(Exception):
    """onnxruntime refused a model (an op it lacks, an invalid graph); the session falls back to
    the numba engine, whose checks raise the project's own error if that cannot run it either."""


def available() -> bool:
    """Whether onnxruntime can be imported here (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def make_session(model: onnx.ModelProto | bytes | str, threads: int, optimize: bool = True,
                 spinning: bool = True) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with the session's thread count.

    Raises:
        OnnxRuntimeRejected: onnxruntime could not load the model.

    Args:
        model: the model, its bytes, or its file's path.
        threads: intra-op threads (1 = no pool threads at all).
        optimize: ORT_ENABLE_ALL when True, else ORT_DISABLE_ALL.
        spinning: let pool threads spin between ops; off when several sessions share the cores,
            where one session's spinning workers would steal time from the next session.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=[ORT_PROVIDER])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidArgument / InvalidGraph types
        raise OnnxRuntimeRejected(str(exc).strip()) from exc


class SegmentStep:
    """A plan step that runs one onnxruntime session: ``step(*inputs) -> tuple(outputs)``.

    ``last_kernel`` is what the executor's statistics report for it.
    """

    last_kernel = "onnxruntime"
    last_density = None

    def __init__(self, session: Any, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        self.session = session
        self.inputs, self.outputs = list(inputs), list(outputs)

    def __call__(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(self.outputs, dict(zip(self.inputs, args))))


class IslandDense:
    """The dense path of an island: its nodes as a one-island onnxruntime session."""

    def __init__(self, session: Any, input_name: str) -> None:
        self.session, self.input_name = session, input_name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
