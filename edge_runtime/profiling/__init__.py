"""Latency profiling: measure backends on this machine, per-layer tables, per-device estimates.

Example:
    >>> from edge_runtime.profiling import profile_model
    >>> result = profile_model("model.onnx", backends=("edge", "onnxruntime"), runs=20,
    ...                        devices=("raspberry-pi-4",))  # doctest: +SKIP
    >>> result.backend("edge").timing.p50_ms, result.estimates[0].latency_ms  # doctest: +SKIP

Only numpy, onnx and numba are imported here; onnxruntime, LiteRT, tqdm and matplotlib
are imported when used. See docs/profiling.md.
"""
from __future__ import annotations

from edge_runtime.profiling.backends import BACKENDS, BackendUnavailableError
from edge_runtime.profiling.costmodel import DEFAULT_EFFICIENCY, Estimate, LayerCost, estimate_latency, model_costs
from edge_runtime.profiling.layers import LayerRow
from edge_runtime.profiling.measure import TimingStats, percentile, summarize
from edge_runtime.profiling.profiler import BackendResult, ProfileResult, profile_model

__all__ = [
    "BACKENDS", "BackendResult", "BackendUnavailableError", "DEFAULT_EFFICIENCY", "Estimate", "LayerCost",
    "LayerRow", "ProfileResult", "TimingStats", "estimate_latency", "model_costs", "percentile",
    "profile_model", "summarize",
]
