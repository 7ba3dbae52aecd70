"""QGemm's epilogue (com.microsoft) compiled: int32 sums + C, float32 scale, then float or quantized output.

``y = float32(acc + C) * (alpha * a_scale * b_scale)`` (C int32, added before the float scale);
with an output scale ``q = saturate(rint(y / y_scale) + y_zp)``, and with a folded lookup
``table[q & 255]``. The same float32 operations in the same order as the numpy epilogue
(:func:`edge_runtime.ops.quant_contrib.qgemm_output`), so the bytes and floats are equal; one
pass over the (M, N) sums instead of numpy's five (add, cast, multiply, divide, rint/clip/cast),
which dominate for the small heads of a CNN (128 or 10 outputs: microseconds of call overhead).
"""
from __future__ import annotations

import numba
import numpy as np

from edge_runtime.kernels.int8_epilogue import _ROUND

__all__ = ["qgemm_float", "qgemm_quantized"]


@numba.njit(cache=True)
def qgemm_float(acc, bias, scale, out):  # pragma: no cover - compiled
    """out (M, N) float32 = float32(acc + bias) * scale (bias, scale: (N,) int32 / float32)."""
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            out[i, j] = np.float32(acc[i, j] + bias[j]) * scale[j]


@numba.njit(cache=True)
def qgemm_quantized(acc, bias, scale, y_scale, y_zp, unsigned, out, table, use_table):  # pragma: no cover
    """out (M, N) = saturate(rint(float32(acc + bias) * scale / y_scale) + y_zp), through ``table`` if used."""
    lo = np.float32(0 if unsigned else -128)
    hi = np.float32(255 if unsigned else 127)
    fzp = np.float32(y_zp)
    ys = np.float32(y_scale)
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            f = np.float32(np.float32(acc[i, j] + bias[j]) * scale[j]) / ys
            f = min(max(np.float32(f), np.float32(-4e6)), np.float32(4e6))  # inside 2**22, outside 8 bits
            q = np.int32(min(max(((f + _ROUND) - _ROUND) + fzp, lo), hi))
            if use_table:
                out[i, j] = table[q & 255]
            else:
                out[i, j] = q
