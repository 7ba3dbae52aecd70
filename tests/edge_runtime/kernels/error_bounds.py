"""Float32 forward-error bounds for the kernel tests, instead of fixed tolerances like 1e-6.

A fixed tolerance encodes the rounding of the machine it was tuned on: summation order
changes with the vector width (AVX-512, AVX2, NEON), with BLAS's blocking for a given shape,
and with whether a multiply and an add were fused (FMA). The standard bound for a float32 sum
of n products, in any order, with or without FMA (Higham, "Accuracy and Stability of Numerical
Algorithms", 2nd ed., 3.1 and 3.5), is

    |computed - exact| <= gamma(n) * sum_i |a_i * b_i|,   gamma(n) = n u / (1 - n u), u = 2**-24

so the tests compute ``sum |a_i b_i|`` in float64 (the same convolution on |x| and |w|) and
compare within ``gamma(n)`` of it. Winograd F(2x2, 3x3) adds its transforms: the bound runs the
algorithm on |x| with |B|, |G| and |A| (the magnitudes every intermediate value can reach) and
the depth grows by the transforms' additions (Barabasz et al., "Error analysis and improving the
accuracy of Winograd convolution for deep neural networks", 2020, section 4).

These bounds are worst cases (typically 10-100x above the observed error) but still orders of
magnitude below what a wrong tap, a lost row or a bad transform gives (errors of the size of the
output itself).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: float32 unit roundoff
U32 = 2.0 ** -24

#: |B^T|, |G| and |A^T| of F(2x2, 3x3) (kernels/winograd.py)
_BT = np.abs(np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64))
_G = np.abs(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]))
_AT = np.abs(np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64))
#: float32 roundings on a Winograd output's longest path besides the Cin-term GEMM sum: U rounded
#: to float32 (1), V = B^T d B (2 + 2), Y = A^T M A (2 + 2), the bias (1), and 2 of slack
WINOGRAD_EXTRA_DEPTH = 12


def gamma(n: int) -> float:
    """Higham's gamma_n for float32: the relative bound of n roundings."""
    return n * U32 / (1.0 - n * U32)


def _pad(x: np.ndarray, pads: Sequence[int]) -> np.ndarray:
    """Zero-pad (N, C, H, W) by ONNX pads (top, left, bottom, right)."""
    return np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))


def direct_conv_bound(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pads: Sequence[int],
                      strides: Sequence[int] = (1, 1)) -> np.ndarray:
    """Bound on |float32 conv - exact conv| (groups 1, dilation 1), per output element.

    Args:
        x: (N, Cin, H, W); w: (Cout, Cin, kh, kw); b: (Cout,) or None.
        pads: ONNX pads (top, left, bottom, right); strides: (sh, sw).

    Returns:
        (N, Cout, OH, OW) float64: gamma(Cin*kh*kw + 1) * conv(|x|, |w|) + u * |b|.
    """
    xp = _pad(np.abs(x.astype(np.float64)), pads)
    kh, kw = w.shape[2:]
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::strides[0], ::strides[1]]
    mag = np.einsum("ncyxkl,ockl->noyx", win, np.abs(w.astype(np.float64)))
    bias = 0.0 if b is None else U32 * np.abs(b.astype(np.float64))[None, :, None, None]
    return gamma(w.shape[1] * kh * kw + 1) * mag + bias


def winograd_bound(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pads: Sequence[int]) -> np.ndarray:
    """Bound on |Winograd F(2x2, 3x3) in float32 - exact conv|, per output element.

    Args:
        x: (N, Cin, H, W); w: (Cout, Cin, 3, 3); b: (Cout,) or None; pads: ONNX pads.

    Returns:
        (N, Cout, OH, OW) float64: gamma(Cin + WINOGRAD_EXTRA_DEPTH) times the Winograd
        algorithm run on magnitudes, plus u * |b|.
    """
    xp = _pad(np.abs(x.astype(np.float64)), pads)
    n, cin, hp, wp = xp.shape
    oh, ow = hp - 2, wp - 2
    th, tw = -(-oh // 2), -(-ow // 2)
    xp = np.pad(xp, ((0, 0), (0, 0), (0, 2 * th + 2 - hp), (0, 2 * tw + 2 - wp)))
    d = sliding_window_view(xp, (4, 4), axis=(2, 3))[:, :, ::2, ::2]              # (N, Cin, th, tw, 4, 4)
    v = np.einsum("ak,ncyxkl,bl->ncyxab", _BT, d, _BT)
    u = np.einsum("ak,oikl,bl->oiab", _G, np.abs(w.astype(np.float64)), _G)       # (Cout, Cin, 4, 4)
    m = np.einsum("oiab,niyxab->noyxab", u, v)
    y = np.einsum("ak,noyxkl,bl->noyxab", _AT, m, _AT)                             # (N, Cout, th, tw, 2, 2)
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], 2 * th, 2 * tw)[:, :, :oh, :ow]
    bias = 0.0 if b is None else U32 * np.abs(b.astype(np.float64))[None, :, None, None]
    return gamma(cin + WINOGRAD_EXTRA_DEPTH) * y + bias


def assert_within(got: np.ndarray, want: np.ndarray, bound: np.ndarray, what: str = "",
                  ignore: np.ndarray | None = None) -> None:
    """|got - want| <= bound elementwise (except where ``ignore``), with the worst offender in the message."""
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    over = err > bound
    if ignore is not None:
        over &= ~ignore
    if over.any():
        i = tuple(np.argwhere(over)[0])
        raise AssertionError(f"{what}: {int(over.sum())} elements exceed the float32 error bound; first at {i}: "
                             f"got {got[i]}, want {want[i]}, error {err[i]:.3g} > bound {bound[i]:.3g}")
