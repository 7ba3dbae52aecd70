"""Per-tensor QuantizeLinear / DequantizeLinear compiled: one pass instead of numpy's three to five.

Quantize: ``saturate(rint(float32(x) / scale) + zero_point)``; dequantize:
``float32(x - zero_point) * scale``: the float32 operations of
:func:`edge_runtime.ops.quantize.quantize` / :func:`~edge_runtime.ops.quantize.dequantize` in the
same order, so the results are equal. For the small tensors at a quantized model's edges (the
784-pixel input, 10 logits) numpy's temporaries and calls cost more than the arithmetic.
"""
from __future__ import annotations

import numba
import numpy as np

from edge_runtime.kernels.int8_epilogue import _ROUND

__all__ = ["quantize_tensor", "dequantize_tensor"]


@numba.njit(cache=True)
def quantize_tensor(x, scale, zp, lo, hi, out):  # pragma: no cover - compiled
    """out.flat[i] = saturate(rint(x.flat[i] / scale) + zp) into [lo, hi] (x, out contiguous 1-D views).

    Returns:
        False on a NaN input (numpy's cast of NaN is platform-defined: the caller runs the numpy op).
    """
    s, fzp, flo, fhi = np.float32(scale), np.float32(zp), np.float32(lo), np.float32(hi)
    for i in range(x.shape[0]):
        f = np.float32(x[i]) / s
        if np.isnan(f):
            return False
        f = min(max(np.float32(f), np.float32(-4e6)), np.float32(4e6))
        out[i] = np.int32(min(max(((f + _ROUND) - _ROUND) + fzp, flo), fhi))
    return True


@numba.njit(cache=True)
def dequantize_tensor(x, scale, zp, out):  # pragma: no cover - compiled
    """out.flat[i] = float32(int32(x.flat[i]) - zp) * scale."""
    s = np.float32(scale)
    for i in range(x.shape[0]):
        out[i] = np.float32(np.int32(x[i]) - zp) * s
