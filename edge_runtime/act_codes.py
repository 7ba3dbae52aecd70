"""Codes for the activations fused into Conv/Gemm/MatMul kernels (numpy-free, numba-free).

Kernels take ``(act, p0, p1)``: an int code and two float parameters. The codes live here, apart
from their numba epilogues (:mod:`edge_runtime.kernels.activation`), so code that only reasons
about a graph (the onnxruntime engine's island search) does not import numba.
"""
from __future__ import annotations

import math

NONE = 0
RELU = 1          # max(x, 0)
CLIP = 2          # min(max(x, p0), p1)   (ReLU6 is CLIP with 0, 6)
LEAKY_RELU = 3    # x if x >= 0 else p0 * x
THRESHOLD_RELU = 4  # x if x >= p0 else 0  (FATReLU / ThresholdedRelu-style; zero-producing; NaN -> 0)
SILU = 5          # x * sigmoid(x)   (Swish; torch nn.SiLU, exported as Sigmoid + Mul)
HARDSWISH = 6     # x * min(max(x / 6 + 1/2, 0), 1)   (ONNX HardSwish, torch nn.Hardswish)
HARDSIGMOID = 7   # min(max(p0 * x + p1, 0), 1)   (ONNX HardSigmoid: alpha p0, beta p1)
SIGMOID = 8       # sigmoid(x)   (a squeeze-excite gate)
GELU = 9          # 0.5 x (1 + erf(x / sqrt 2))   (FusedGelu approximate='none'; kernels/approx.py)
GELU_TANH = 10    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (approximate='tanh')
# NaN and Inf: every code but THRESHOLD_RELU keeps a NaN (max(NaN, 0) is NaN), as onnxruntime does;
# SILU and HARDSWISH give NaN at -inf (-inf * 0), as onnxruntime's unfused graphs do.

#: Codes the sparse kernels (sparse_matmul.py, sparse_conv.py) accept in their epilogue.
SPARSE_CODES = frozenset({NONE, RELU, CLIP, LEAKY_RELU, THRESHOLD_RELU})
#: Every code above.
CODES = frozenset(range(GELU_TANH + 1))


def relu_family(op_type: str, attrs: dict, lo: float | None = None, hi: float | None = None
                ) -> tuple[int, float, float] | None:
    """``(code, p0, p1)`` of a Relu, ThresholdedRelu, LeakyRelu or Clip node with ONNX's semantics, or
    None (another op, or ThresholdedRelu with alpha = inf). ``attrs``: the node's attributes;
    ``lo`` / ``hi``: a Clip's bounds (None: absent), read by the caller from its inputs or its
    opset-6 ``min`` / ``max`` attributes."""
    if op_type == "Relu":
        return RELU, 0.0, 0.0
    if op_type == "ThresholdedRelu":  # x > alpha is x >= the next float32 above alpha (for alpha < inf)
        import numpy as np

        alpha = np.float32(attrs.get("alpha", 1.0))
        if alpha == np.inf:
            return None  # x > inf is never true, x >= inf is for inf
        return THRESHOLD_RELU, float(np.nextafter(alpha, np.float32(np.inf))), 0.0
    if op_type == "LeakyRelu":
        return LEAKY_RELU, float(attrs.get("alpha", 0.01)), 0.0
    if op_type == "Clip":
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
        if lo == 0.0 and hi == math.inf:
            return RELU, 0.0, 0.0
        return CLIP, lo, hi
    return None
