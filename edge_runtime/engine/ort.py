"""onnxruntime as the dense engine: availability, session options, and segment steps.

onnxruntime is an optional dependency on the device (the ``ort`` extra): nothing here imports
it at module level, and :func:`available` answers without importing it.
"""
from __future__ import annotations

import importlib.util
import re
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from edge_runtime.resources import release_freed_memory

#: What get_providers() reports: onnxruntime's CPU provider runs the dense segments,
#: edge_runtime's own kernels run islands (and everything on the numba-only path).
ORT_PROVIDER = "CPUExecutionProvider"
EDGE_PROVIDER = "EdgeRuntimeExecutionProvider"


class OnnxRuntimeRejected(Exception):
    """onnxruntime refused a model (an op it lacks, an invalid graph); the session falls back to
    the numba engine, whose checks raise the project's own error if that cannot run it either."""


#: The element types onnxruntime's Python API exchanges as numpy arrays (its feeds and fetches).
#: bfloat16, float8, int4/uint4, int2/uint2 and float4 tensors run inside onnxruntime but cannot
#: cross its Python boundary ("No corresponding Numpy type for Tensor Type").
EXCHANGED = frozenset(onnx.TensorProto.__dict__[n] for n in (
    "BOOL", "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64",
    "FLOAT16", "FLOAT", "DOUBLE", "STRING"))


def check_exchanged(values: Sequence[tuple[str, int]], where: str) -> None:
    """Raise :class:`OnnxRuntimeRejected` when a tensor that must cross onnxruntime's Python
    boundary has an element type with no numpy counterpart there.

    Args:
        values: ``(name, TensorProto element type)`` pairs.
        where: what the tensors are ("the model's inputs and outputs", "a segment's cut").
    """
    for name, elem in values:
        if elem not in EXCHANGED:
            raise OnnxRuntimeRejected(
                f"{where} include {name!r} of type {onnx.TensorProto.DataType.Name(elem)}, which "
                "onnxruntime's Python API cannot take or return as a numpy array")


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
    opts.log_severity_level = 4  # fatal only: its run errors reach the caller as one ExecutionError
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    try:
        session = ort.InferenceSession(data, sess_options=opts, providers=[ORT_PROVIDER])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidArgument / InvalidGraph types
        raise OnnxRuntimeRejected(str(exc).strip()) from exc
    _let_bytes_go(session)
    del data
    release_freed_memory()  # onnxruntime's graph transforms free their copies: not under the next session
    return session


def _let_bytes_go(session: Any) -> None:
    """Drop the Python wrapper's reference to the serialized model it was built from.

    onnxruntime's ``InferenceSession`` keeps the bytes it was given for the session's lifetime
    (``_model_bytes``, marked "TODO: This is bad as we're holding the memory indefinitely" in its
    source), only to build the session again when a provider falls back or ``set_providers`` is
    called; we use the CPU provider alone, never call ``set_providers``, and turn the fallback off
    (a CPU session has nothing to fall back to). Held, they are the model's weights once more per
    session: 80 MB for the sparse MLP's whole-model session, and every segment's own weights in a
    cut plan. The attribute is private: where a version lacks it, nothing changes.
    """
    if isinstance(getattr(session, "_model_bytes", None), bytes):
        session.disable_fallback()
        session._model_bytes = None


def run_failed(exc: Exception, what: str = "the model") -> Exception:
    """onnxruntime's failure while running, as the project's one-line :class:`ExecutionError`:
    the node it names, its status message without the C++ source location, and the way out
    (onnxruntime rejects some valid models only when they run: a per-channel ConvInteger zero
    point, ReduceMax over an empty bool set); an allocation failure reads as the model's request."""
    from edge_runtime.errors import ExecutionError

    text = " ".join(str(exc).split())
    node = re.search(r"running (\S+) node\. Name:'([^']*)'", text)
    where = (f"node '{node[2]}' ({node[1]})" if node and node[2] else f"a {node[1]} node" if node else what)
    status = text.split("Status Message:", 1)[-1].strip() or type(exc).__name__
    status = re.sub(r"^\S+:\d+ [^(]*\([^)]*\)(?: const)? ", "", status).rstrip(". ")
    if isinstance(exc, MemoryError) or "allocate memory" in status:
        return ExecutionError(f"{where} needs more memory than this process can allocate (onnxruntime: {status}). "
                              f"The model (or the input size) asks for a tensor too large for this device; use a "
                              f"smaller input or fix the model.")
    return ExecutionError(f"onnxruntime failed running {where}: {status}. edge_runtime's own kernels may "
                          f"run it: create the session with providers=['{EDGE_PROVIDER}'] (or set "
                          f"EDGE_RUNTIME_DENSE_ENGINE=numba).")


def run(session: Any, wanted: Sequence[str] | None, feed: Mapping[str, np.ndarray], what: str = "the model") -> list:
    """``session.run(wanted, feed)`` with onnxruntime's failures as :func:`run_failed` errors."""
    try:
        return session.run(wanted, feed)
    except Exception as exc:  # onnxruntime's Fail / RuntimeException / InvalidArgument types
        raise run_failed(exc, what) from exc


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
        return tuple(run(self.session, self.outputs, dict(zip(self.inputs, args)), "a segment"))


class IslandDense:
    """The dense path of an island: its nodes as a one-island onnxruntime session."""

    def __init__(self, session: Any, input_name: str) -> None:
        self.session, self.input_name = session, input_name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
