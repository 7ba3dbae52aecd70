"""Session options, shaped like ``onnxruntime.SessionOptions``."""
from __future__ import annotations

import os

from edge_runtime.errors import InvalidArgumentError

# onnxruntime's GraphOptimizationLevel values, so code written for onnxruntime keeps working.
ORT_DISABLE_ALL = 0
ORT_ENABLE_BASIC = 1
ORT_ENABLE_EXTENDED = 2
ORT_ENABLE_ALL = 99
#: ``SessionOptions.sparse_kernels`` values (``device_profiles`` checks the same two for ``runtime.sparse_kernels``).
SPARSE_KERNELS = ("numba", "numpy")


class SessionOptions:
    """Options for :class:`edge_runtime.InferenceSession`.

    Attributes:
        intra_op_num_threads: threads for kernels (numba and BLAS); 0 = the device profile's
            ``runtime.threads`` when a profile is given, else all CPUs available to the process.
        inter_op_num_threads: accepted for onnxruntime compatibility; nodes run one after another.
        graph_optimization_level: ``ORT_DISABLE_ALL`` (0) turns off constant folding and fusions.
        log_severity_level: accepted for compatibility; use the ``logging`` module to see our logs.
        sparse_kernels: what runs the sparse islands of the onnxruntime engine: ``"numba"``
            (edge_runtime's zero-skipping kernels, fastest, for Conv, Gemm and MatMul) or
            ``"numpy"`` (on the kernels ``edge-runtime warmup`` compiled ahead of time where it could:
            Gemm, MatMul and the Convs they take; else Gemm / MatMul only, by numpy gather + BLAS at
            about half the numba kernel's speed; numba is never loaded, which saves ~55-130 MB and
            ~0.3 s of session creation on a memory-tight board); None (default): the device
            profile's ``runtime.sparse_kernels``,
            else ``"numba"`` (whose Gemm-only models also run on the compiled kernels where they
            exist, docs/engine.md). The numba engine (``EdgeRuntimeExecutionProvider``) needs numba.

    Example:
        >>> import edge_runtime
        >>> opts = edge_runtime.SessionOptions()
        >>> opts.intra_op_num_threads = 1
    """

    def __init__(self) -> None:
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.graph_optimization_level = ORT_ENABLE_ALL
        self.log_severity_level = 2
        self.sparse_kernels: str | None = None

    def resolved_sparse_kernels(self, profile_kernels: str | None = None) -> str:
        """``sparse_kernels``, validated; unset: ``profile_kernels`` (a device profile's), else "numba".

        Raises:
            InvalidArgumentError: a value other than None, "numba" or "numpy".
        """
        kernels = self.sparse_kernels if self.sparse_kernels is not None else (profile_kernels or "numba")
        if kernels not in SPARSE_KERNELS:
            raise InvalidArgumentError(f"SessionOptions.sparse_kernels={kernels!r} is not a kernel choice; expected one "
                                       f"of {list(SPARSE_KERNELS)} (\"numpy\" never loads numba).")
        return kernels

    def resolved_threads(self, profile_threads: int | None = None) -> int:
        """The thread count a session uses, validated.

        Raises:
            InvalidArgumentError: a negative or non-integer thread count.
        """
        n = self.intra_op_num_threads
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgumentError(
                f"SessionOptions.intra_op_num_threads must be an integer >= 0 (0 = automatic), got {n!r}.")
        if n == 0:
            n = profile_threads or available_cpus()
        return n

    def __repr__(self) -> str:
        return (f"SessionOptions(intra_op_num_threads={self.intra_op_num_threads}, "
                f"graph_optimization_level={self.graph_optimization_level})")


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and cgroup-pinned containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
