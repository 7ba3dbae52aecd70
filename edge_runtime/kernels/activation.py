"""Codes for activations fused into Conv/Gemm/MatMul kernels.

Kernels take ``(act, p0, p1)``: an int code and two float parameters, so a numba
kernel can apply the activation in its epilogue without Python callbacks.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

NONE = 0
RELU = 1          # max(x, 0)
CLIP = 2          # min(max(x, p0), p1)   (ReLU6 is CLIP with 0, 6)
LEAKY_RELU = 3    # x if x >= 0 else p0 * x
THRESHOLD_RELU = 4  # x if x >= p0 else 0  (FATReLU / ThresholdedRelu-style; zero-producing; NaN -> 0)
# NaN and Inf: every code but THRESHOLD_RELU keeps a NaN (max(NaN, 0) is NaN), as onnxruntime does.


def apply_activation(y: NDArray[np.float32], act: int, p0: float = 0.0, p1: float = 0.0) -> NDArray[np.float32]:
    """Dense numpy reference of the fused activations, applied in place and returned."""
    if act == RELU:
        np.maximum(y, 0.0, out=y)
    elif act == CLIP:
        np.clip(y, p0, p1, out=y)
    elif act == LEAKY_RELU:
        np.copyto(y, np.where(y >= 0, y, y * np.float32(p0)))
    elif act == THRESHOLD_RELU:
        y[~(y >= p0)] = 0.0  # NaN -> 0 like the kernels' epilogue and onnxruntime's ThresholdedRelu
    return y
