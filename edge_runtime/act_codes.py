"""Codes for the activations fused into Conv/Gemm/MatMul kernels (numpy-free, numba-free).

Kernels take ``(act, p0, p1)``: an int code and two float parameters. The codes live here, apart
from their numba epilogues (:mod:`edge_runtime.kernels.activation`), so code that only reasons
about a graph (the onnxruntime engine's island search) does not import numba.
"""
from __future__ import annotations

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
