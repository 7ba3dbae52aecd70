"""Codes for activations fused into Conv/Gemm/MatMul kernels, and their numba epilogues.

Kernels take ``(act, p0, p1)``: an int code and two float parameters, so a numba
kernel can apply the activation in its epilogue without Python callbacks.

The sigmoid of SILU and SIGMOID is onnxruntime's own (MLAS ``MlasLogisticConstants``, taken from
Eigen): the input clamped to [-18, 18], an odd rational polynomial, the result clamped to
[0, 1]. No libm ``exp`` call, so the epilogue loops vectorise (numba has no SVML here and
none on ARM), and a fused SiLU matches onnxruntime's unfused ``Sigmoid`` + ``Mul``
to a few float32 ulps. :func:`act_inplace` runs one loop per code: with all codes in one
loop body LLVM does not unswitch the branch out of a loop this long and nothing vectorises.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import uint64 as u64
from numpy.typing import NDArray

from edge_runtime.act_codes import (  # noqa: F401 - re-exported: kernels use act_codes.RELU etc.
    CLIP, CODES, GELU, GELU_TANH, HARDSIGMOID, HARDSWISH, LEAKY_RELU, NONE, RELU, SIGMOID, SILU, SPARSE_CODES,
    THRESHOLD_RELU)
from edge_runtime.kernels.approx import gelu_erf_f32, gelu_tanh_f32
from edge_runtime.kernels.fastmath import FAST

_f = np.float32
_LO, _HI = _f(-18.0), _f(18.0)
_A9, _A7, _A5, _A3, _A1 = (_f(c) for c in (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                                           8.51377133304701e-03, 2.48287947061529e-01))
_B10, _B8, _B6, _B4, _B2, _B0 = (_f(c) for c in (6.10247389755681e-13, 5.76102136993427e-09,
                                                 6.29106785017040e-06, 1.70198817374094e-03,
                                                 1.16817656904453e-01, 9.93151921023180e-01))
_HALF, _ZERO, _ONE, _SIXTH = _f(0.5), _f(0.0), _f(1.0), _f(1.0 / 6.0)
_erf = np.vectorize(math.erf, otypes=[np.float64])  # reference path only (float64 / odd layouts)


@numba.njit(cache=True, inline="always")
def logistic_f32(x: float) -> float:  # pragma: no cover - compiled
    """sigmoid(x) as onnxruntime's MLAS computes it (clamped rational polynomial; NaN for NaN)."""
    v = min(max(x, _LO), _HI)
    v2 = v * v
    p = v2 * _A9 + _A7
    p = p * v2 + _A5
    p = p * v2 + _A3
    p = p * v2 + _A1
    p = p * v
    q = v2 * _B10 + _B8
    q = q * v2 + _B6
    q = q * v2 + _B4
    q = q * v2 + _B2
    q = q * v2 + _B0
    return min(max(p / q + _HALF, _ZERO), _ONE)


@numba.njit(cache=True, inline="always")
def act_scalar(v: float, act: int, p0: float, p1: float) -> float:  # pragma: no cover - compiled
    """One fused activation on a scalar; NaN stays NaN except in THRESHOLD_RELU."""
    if act == 1:
        return 0.0 if v <= 0.0 else v
    if act == 2:
        return min(max(v, p0), p1)
    if act == 3:
        return v if v >= 0.0 else v * p0
    if act == 4:
        return v if v >= p0 else 0.0
    if act == 5:
        return v * logistic_f32(v)
    if act == 6:
        return v * min(max(v * _SIXTH + _HALF, _ZERO), _ONE)
    if act == 7:
        return min(max(p0 * v + p1, 0.0), 1.0)
    if act == 8:
        return logistic_f32(v)
    if act == 9:
        return gelu_erf_f32(v)
    if act == 10:
        return gelu_tanh_f32(v)
    return v


@numba.njit(cache=True, fastmath=FAST, error_model="numpy", boundscheck=False)
def act_inplace(y, act, p0, p1):  # pragma: no cover (numba)
    """Apply code ``act`` to a contiguous 1-D float32 array in place, one vectorised loop per code."""
    n = y.shape[0]
    if act == 1:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 1, p0, p1)
    elif act == 2:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 2, p0, p1)
    elif act == 3:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 3, p0, p1)
    elif act == 4:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 4, p0, p1)
    elif act == 5:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 5, p0, p1)
    elif act == 6:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 6, p0, p1)
    elif act == 7:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 7, p0, p1)
    elif act == 8:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 8, p0, p1)
    elif act == 9:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 9, p0, p1)
    elif act == 10:
        for k in range(n):
            y[u64(k)] = act_scalar(y[u64(k)], 10, p0, p1)


@numba.njit(cache=True, fastmath=FAST, error_model="numpy", boundscheck=False)
def bias_act_rows(y, bias, act, p0, p1):  # pragma: no cover (numba)
    """y[r, :] = act(y[r, :] + bias[r]) in place for a C-contiguous 2-D float32 ``y``."""
    rows, cols = y.shape
    for r in range(rows):
        b = bias[r]
        row = y[r]
        for k in range(cols):
            row[u64(k)] += b
        if act != 0:
            act_inplace(row, act, p0, p1)


def _numpy_activation(y: NDArray[np.floating], act: int, p0: float, p1: float) -> NDArray[np.floating]:
    if act == RELU:
        np.maximum(y, 0.0, out=y)
    elif act == CLIP:
        np.clip(y, p0, p1, out=y)
    elif act == LEAKY_RELU:
        np.copyto(y, np.where(y >= 0, y, y * y.dtype.type(p0)))
    elif act == THRESHOLD_RELU:
        y[~(y >= p0)] = 0.0  # NaN -> 0 like the kernels' epilogue and onnxruntime's ThresholdedRelu
    elif act == SILU:
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(y, y / (1.0 + np.exp(-y)))
    elif act == HARDSWISH:
        with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, as in onnxruntime
            np.copyto(y, y * np.clip(y / 6.0 + 0.5, 0.0, 1.0))
    elif act == HARDSIGMOID:
        np.copyto(y, np.clip(y * p0 + p1, 0.0, 1.0))
    elif act == SIGMOID:
        with np.errstate(over="ignore"):
            np.copyto(y, 1.0 / (1.0 + np.exp(-y)))
    elif act == GELU:
        np.copyto(y, 0.5 * y * (1.0 + _erf(y / math.sqrt(2.0))))
    elif act == GELU_TANH:
        np.copyto(y, 0.5 * y * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (y + 0.044715 * y ** 3))))
    return y


def apply_activation(y: NDArray[np.floating], act: int, p0: float = 0.0, p1: float = 0.0) -> NDArray[np.floating]:
    """Apply activation code ``act`` to ``y`` in place and return it.

    C-contiguous float32 arrays go through the numba epilogue (:func:`act_inplace`, the same
    arithmetic as the conv kernels); other dtypes and layouts through numpy (float64 in
    tests serves as a reference).

    Args:
        y: float array, modified in place.
        act: activation code (NONE ... GELU_TANH).
        p0, p1: the code's parameters.

    Returns:
        ``y``.

    Example:
        >>> apply_activation(np.array([-1.0, 2.0], np.float32), RELU).tolist()
        [0.0, 2.0]
    """
    if act == NONE:
        return y
    if y.dtype == np.float32 and y.flags.c_contiguous:
        act_inplace(y.reshape(-1), int(act), float(p0), float(p1))
        return y
    return _numpy_activation(y, act, p0, p1)
