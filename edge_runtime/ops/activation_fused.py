"""Internal fused activations that planner passes create (domain ``ai.edge_runtime``).

``FusedGelu(X, *, approximate)`` replaces the Erf-form and tanh-form GELU subgraphs that
the torch exporters emit (5-9 elementwise nodes, each a full pass over a 197 x 3072
activation) and ONNX's Gelu op; see :mod:`edge_runtime.passes.fuse_gelu`.

The kernels are one numba pass over the input into one output buffer, with the
vectorisable erf/tanh of :mod:`edge_runtime.kernels.approx` (no libm call per element).
A FusedGelu right after a MatMul/Gemm is folded further into its epilogue
(:mod:`edge_runtime.passes.fuse_activation`, codes GELU / GELU_TANH).
"""
from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidModelError
from edge_runtime.kernels.approx import gelu_erf_f32, gelu_tanh_f32
from edge_runtime.kernels.fastmath import FAST
from edge_runtime.ops.elementwise import FLOAT, check_dtype
from edge_runtime.ops.registry import INTERNAL_DOMAIN, register

Array = NDArray[Any]

#: Accepted values of FusedGelu's ``approximate`` attribute (as in ONNX Gelu-20).
APPROXIMATIONS = ("none", "tanh")


@numba.njit(cache=True, fastmath=FAST, error_model="numpy")
def gelu_erf_kernel(x: Array, out: Array) -> None:  # pragma: no cover - compiled
    """out = 0.5 x (1 + erf(x / sqrt 2)) for contiguous 1-D float32 arrays."""
    for i in range(x.size):
        out[i] = gelu_erf_f32(x[i])


@numba.njit(cache=True, fastmath=FAST, error_model="numpy")
def gelu_tanh_kernel(x: Array, out: Array) -> None:  # pragma: no cover - compiled
    """out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) for contiguous 1-D float32 arrays."""
    for i in range(x.size):
        out[i] = gelu_tanh_f32(x[i])


def gelu(x: Array, approximate: str = "none") -> Array:
    """GELU of a float32 array of any shape, returned in a new buffer.

    Args:
        x: float32 array.
        approximate: "none" (erf form) or "tanh".

    Returns:
        float32 array of ``x``'s shape.

    Example:
        >>> gelu(np.array([-1.0, 0.0, 1.0], np.float32)).round(4).tolist()
        [-0.1587, 0.0, 0.8413]
    """
    xc = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(xc)
    if approximate == "tanh":
        gelu_tanh_kernel(xc, out)
    else:
        gelu_erf_kernel(xc, out)
    return out.reshape(np.shape(x))


@register("FusedGelu", domain=INTERNAL_DOMAIN)
def FusedGelu(X: Array, *, approximate: str = "none") -> Array:
    """GELU in one pass: 0.5 x (1 + erf(x / sqrt 2)), or the tanh form when approximate='tanh'.

    Raises:
        UnsupportedDTypeError: ``X`` is not float32.
        InvalidModelError: ``approximate`` is neither 'none' nor 'tanh'.
    """
    check_dtype("FusedGelu", X, FLOAT)
    if approximate not in APPROXIMATIONS:
        raise InvalidModelError(f"FusedGelu: attribute approximate={approximate!r} is invalid; expected one of "
                                f"{list(APPROXIMATIONS)}. The node was not produced by edge_runtime's planner.")
    return gelu(X, approximate)
