"""Session options, shaped like ``onnxruntime.SessionOptions``."""
from __future__ import annotations

import os

from edge_runtime.errors import InvalidArgumentError

# onnxruntime's GraphOptimizationLevel values, so code written for onnxruntime keeps working.
ORT_DISABLE_ALL = 0
ORT_ENABLE_BASIC = 1
ORT_ENABLE_EXTENDED = 2
ORT_ENABLE_ALL = 99


class SessionOptions:
    """Options for :class:`edge_runtime.InferenceSession`.

    Attributes:
        intra_op_num_threads: threads for kernels (numba and BLAS); 0 = the device profile's
            ``runtime.threads`` when a profile is given, else all CPUs available to the process.
        inter_op_num_threads: accepted for onnxruntime compatibility; nodes run one after another.
        graph_optimization_level: ``ORT_DISABLE_ALL`` (0) turns off constant folding and fusions.
        log_severity_level: accepted for compatibility; use the ``logging`` module to see our logs.

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
