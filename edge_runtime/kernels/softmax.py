"""Row-wise softmax in numba with a vectorisable exp.

numpy's softmax makes five passes (max, subtract, exp, sum, divide) with a temporary;
numba's ``math.exp`` is a scalar libm call (no SVML here) that stops the loop from
vectorising. :func:`exp_f32` is Cody-Waite range reduction, a degree-6 polynomial and
an exponent-bit build of 2**n, all inlined, so a row is: numpy's SIMD row max (a numba
max-reduction stays scalar, 2x slower), one exp-and-sum pass writing the output, one
scaling pass.

API::

    softmax_rows(x) -> y        x (R, L) float32; softmax over each row
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from numpy.typing import NDArray

from edge_runtime.kernels.fastmath import FAST  # no nnan/ninf: attention masks' -inf must give exactly 0

_f = np.float32
_LOG2E = _f(1.4426950408889634)
_LN2_HI, _LN2_LO = _f(0.693359375), _f(-2.12194440e-4)
_P0, _P1, _P2, _P3, _P4, _P5 = (_f(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                               4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_LO, _HI = _f(-87.0), _f(88.0)
_ONE, _HALF, _ZERO = _f(1.0), _f(0.5), _f(0.0)


@intrinsic
def _bits_as_f32(typingctx, bits):  # pragma: no cover - compile-time codegen
    """Reinterpret an int32's bits as a float32 (an LLVM bitcast: free, and it vectorises)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@numba.njit(cache=True, inline="always", fastmath=FAST, error_model="numpy")
def exp_f32(x: float) -> float:  # pragma: no cover - compiled
    """exp(x) in float32, max rel error 3e-7 (Cephes expf); 0 below -87, clamped above 88."""
    small = x < _LO
    x = min(max(x, _LO), _HI)
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _P0
    p = p * r + _P1
    p = p * r + _P2
    p = p * r + _P3
    p = p * r + _P4
    p = p * r + _P5
    p = p * r * r + r + _ONE
    e = p * _bits_as_f32(np.int32(n + _f(127.0)) << 23)
    return _ZERO if small else e


@numba.njit(cache=True, fastmath=FAST, error_model="numpy", boundscheck=False)
def _softmax(x, row_max, y):  # pragma: no cover (numba)
    rows, n = x.shape
    for r in range(rows):
        row = x[r]
        out = y[r]
        m = row_max[r]
        s = _f(0.0)
        for j in range(n):
            e = exp_f32(row[j] - m)
            out[j] = e
            s += e
        inv = _ONE / s
        for j in range(n):
            out[j] *= inv


def softmax_rows(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Softmax over the last axis of a 2-D float32 array.

    Args:
        x: (R, L) float32.

    Returns:
        (R, L) float32; every row sums to 1, except that a row holding a NaN or +inf (or only
        -inf) is all NaN, as in onnxruntime.

    Example:
        >>> softmax_rows(np.array([[0.0, 0.0], [0.0, np.log(3.0)]], np.float32)).round(6).tolist()
        [[0.5, 0.5], [0.25, 0.75]]
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    if x.size:
        row_max = x.max(axis=1)  # numpy's SIMD max (a numba max loop does not vectorise); NaN if any is
        _softmax(x, row_max, y)
        bad = ~np.isfinite(row_max)
        if bad.any():  # a NaN or +inf in the row (or all -inf): x - max is NaN, as in onnxruntime
            y[bad] = np.nan
    return y
