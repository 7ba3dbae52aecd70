"""Winograd F(2x2, 3x3) convolution for 3x3, stride-1, dilation-1, groups-1 Conv.

Public API (kernels/conv.py dispatches here when the shape qualifies)::

    u = winograd_weights(W)                       # once, at plan time: (16, Cout, Cin)
    y = winograd_conv2d(x, u, bias, pads, act, p0, p1)   # x (N, Cin, H, W) -> (N, Cout, OH, OW)

Each 2x2 output tile is computed from a 4x4 input tile ``d`` (input tiles overlap by 2)::

    V = B^T d B        (input transform, numba)       -> V (16, Cin, tiles)
    M[k] = U[k] @ V[k] (16 sgemms, one np.matmul call) -> M (16, Cout, tiles)
    Y = A^T M A        (output transform + bias + fused activation, numba) -> NCHW

with U = G g G^T (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2015). The GEMMs do 16 * Cin * Cout multiply-adds per 4 output pixels instead of
9 * Cin * Cout per pixel: 2.25x fewer. Tiles are processed a band of tile rows at a
time so V and M stay in L2 (``CHUNK_BYTES``).

Accuracy: F(2x2, 3x3)'s transforms only use 0, +-1 and +-1/2, so float32 results stay
within a few ulps of the direct convolution (tests/edge_runtime/kernels/test_winograd.py).
"""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
from numba import uint64 as u64
from numpy.typing import NDArray

from edge_runtime.kernels.activation import act_inplace
from edge_runtime.kernels.fastmath import FAST

#: G of F(2x2, 3x3): U = G g G^T turns a 3x3 filter into a 4x4 tile.
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: Bytes of V plus M per GEMM batch: a band of tile rows whose transforms stay in L2
#: (2 MB per core on the development machine).
CHUNK_BYTES = 1024 * 1024
#: ...but never fewer tiles per GEMM than this (narrow GEMMs lose more than L2 saves).
MIN_CHUNK_TILES = 128


def winograd_weights(w: NDArray[np.floating]) -> NDArray[np.float32]:
    """Transform 3x3 filters once: (Cout, Cin, 3, 3) -> U (16, Cout, Cin) float32, C-contiguous.

    U[4 * a + b, o, i] = (G w[o, i] G^T)[a, b], computed in float64.

    Example:
        >>> winograd_weights(np.ones((8, 4, 3, 3), np.float32)).shape
        (16, 8, 4)
    """
    w64 = np.asarray(w, dtype=np.float64)
    u = np.einsum("ak,oikl,bl->aboi", G, w64, G)  # (4, 4, Cout, Cin)
    return np.ascontiguousarray(u.reshape(16, w64.shape[0], w64.shape[1]), dtype=np.float32)


@numba.njit(cache=True, fastmath=FAST, error_model="numpy", boundscheck=False)
def _input_transform(xp, v, ty0, ty1, tw):  # pragma: no cover (numba)
    # xp (Cin, 2*th+2, 2*tw+2) zero-padded; v (16, Cin, (ty1-ty0)*tw); V = B^T d B per tile.
    cin = xp.shape[0]
    for c in range(cin):
        for ty in range(ty0, ty1):
            r0, r1, r2, r3 = xp[c, 2 * ty], xp[c, 2 * ty + 1], xp[c, 2 * ty + 2], xp[c, 2 * ty + 3]
            base = (ty - ty0) * tw
            for tx in range(tw):
                j = u64(2 * tx)
                # B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), per column j..j+3
                a0 = r0[j] - r2[j]
                a1 = r0[j + 1] - r2[j + 1]
                a2 = r0[j + 2] - r2[j + 2]
                a3 = r0[j + 3] - r2[j + 3]
                b0 = r1[j] + r2[j]
                b1 = r1[j + 1] + r2[j + 1]
                b2 = r1[j + 2] + r2[j + 2]
                b3 = r1[j + 3] + r2[j + 3]
                e0 = r2[j] - r1[j]
                e1 = r2[j + 1] - r1[j + 1]
                e2 = r2[j + 2] - r1[j + 2]
                e3 = r2[j + 3] - r1[j + 3]
                f0 = r1[j] - r3[j]
                f1 = r1[j + 1] - r3[j + 1]
                f2 = r1[j + 2] - r3[j + 2]
                f3 = r1[j + 3] - r3[j + 3]
                t = u64(base + tx)
                # (.) B: the same combinations along each row
                v[0, c, t] = a0 - a2
                v[1, c, t] = a1 + a2
                v[2, c, t] = a2 - a1
                v[3, c, t] = a1 - a3
                v[4, c, t] = b0 - b2
                v[5, c, t] = b1 + b2
                v[6, c, t] = b2 - b1
                v[7, c, t] = b1 - b3
                v[8, c, t] = e0 - e2
                v[9, c, t] = e1 + e2
                v[10, c, t] = e2 - e1
                v[11, c, t] = e1 - e3
                v[12, c, t] = f0 - f2
                v[13, c, t] = f1 + f2
                v[14, c, t] = f2 - f1
                v[15, c, t] = f1 - f3


@numba.njit(cache=True, fastmath=FAST, error_model="numpy", boundscheck=False)
def _output_transform(m, y, bias, ty0, ty1, tw, act, p0, p1):  # pragma: no cover (numba)
    # m (16, Cout, (ty1-ty0)*tw); y (Cout, OH, OW); Y = A^T M A + bias, then the activation.
    cout, oh, ow = y.shape
    full = ow // 2
    spare = np.empty(2 * tw, np.float32)  # row 1 of the last tile row when OH is odd
    for co in range(cout):
        bb = bias[co]
        for ty in range(ty0, ty1):
            mk = m[:, co, (ty - ty0) * tw:(ty - ty0 + 1) * tw]  # (16, tw)
            two = 2 * ty + 1 < oh
            y0 = y[co, 2 * ty]
            y1 = y[co, 2 * ty + 1] if two else spare
            for tx in range(full):
                t = u64(tx)
                # A^T M: rows (m0 + m1 + m2, m1 - m2 - m3) of each of the 4 columns
                s0 = mk[0, t] + mk[4, t] + mk[8, t]
                s1 = mk[1, t] + mk[5, t] + mk[9, t]
                s2 = mk[2, t] + mk[6, t] + mk[10, t]
                s3 = mk[3, t] + mk[7, t] + mk[11, t]
                q0 = mk[4, t] - mk[8, t] - mk[12, t]
                q1 = mk[5, t] - mk[9, t] - mk[13, t]
                q2 = mk[6, t] - mk[10, t] - mk[14, t]
                q3 = mk[7, t] - mk[11, t] - mk[15, t]
                j = u64(2 * tx)
                # (.) A: the same combinations along each row
                y0[j] = s0 + s1 + s2 + bb
                y0[j + 1] = s1 - s2 - s3 + bb
                y1[j] = q0 + q1 + q2 + bb
                y1[j + 1] = q1 - q2 - q3 + bb
            if full < tw:  # odd OW: the last tile has one valid column
                t = u64(full)
                j = u64(2 * full)
                y0[j] = (mk[0, t] + mk[4, t] + mk[8, t] + mk[1, t] + mk[5, t] + mk[9, t]
                         + mk[2, t] + mk[6, t] + mk[10, t] + bb)
                y1[j] = (mk[4, t] - mk[8, t] - mk[12, t] + mk[5, t] - mk[9, t] - mk[13, t]
                         + mk[6, t] - mk[10, t] - mk[14, t] + bb)
            if act != 0:
                act_inplace(y0, act, p0, p1)
                if two:
                    act_inplace(y1, act, p0, p1)


def _band_rows(cin: int, cout: int, th: int, tw: int) -> int:
    """Tile rows per GEMM batch: V and M of one band within ``CHUNK_BYTES`` (>= MIN_CHUNK_TILES tiles)."""
    tiles = max(MIN_CHUNK_TILES, CHUNK_BYTES // (16 * 4 * (cin + cout)))
    return max(1, min(th, -(-tiles // tw)))


def winograd_conv2d(x: NDArray[np.float32], u: NDArray[np.float32], bias: NDArray[np.float32] | None = None,
                    pads: Sequence[int] = (0, 0, 0, 0), act: int = 0, p0: float = 0.0,
                    p1: float = 0.0) -> NDArray[np.float32]:
    """3x3, stride-1, dilation-1, groups-1 conv by Winograd F(2x2, 3x3), bias and activation fused.

    Args:
        x: (N, Cin, H, W) float32.
        u: (16, Cout, Cin) from :func:`winograd_weights`.
        bias: (Cout,) or None.
        pads: explicit ONNX pads (top, left, bottom, right), all >= 0.
        act, p0, p1: fused activation code and parameters (kernels/activation.py).

    Returns:
        (N, Cout, H + top + bottom - 2, W + left + right - 2) float32, C-contiguous.
    """
    n_img, cin, hgt, wid = x.shape
    cout = u.shape[1]
    pt, pl, pb, pr = (int(p) for p in pads)
    oh, ow = hgt + pt + pb - 2, wid + pl + pr - 2
    th, tw = -(-oh // 2), -(-ow // 2)
    b = np.zeros(cout, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    y = np.empty((n_img, cout, oh, ow), np.float32)
    rows = _band_rows(cin, cout, th, tw)
    vbuf = np.empty(16 * cin * rows * tw, np.float32)
    mbuf = np.empty(16 * cout * rows * tw, np.float32)
    # Zero-padded to whole tiles: 2*th+2 rows covers pt + H + pb (and one more row when OH is odd).
    xp = np.zeros((cin, 2 * th + 2, 2 * tw + 2), np.float32)
    for n in range(n_img):
        xp[:, pt:pt + hgt, pl:pl + wid] = x[n]
        for ty0 in range(0, th, rows):
            ty1 = min(th, ty0 + rows)
            tiles = (ty1 - ty0) * tw
            v = vbuf[:16 * cin * tiles].reshape(16, cin, tiles)
            m = mbuf[:16 * cout * tiles].reshape(16, cout, tiles)
            _input_transform(xp, v, ty0, ty1, tw)
            np.matmul(u, v, out=m)
            _output_transform(m, y[n], b, ty0, ty1, tw, int(act), float(p0), float(p1))
    return y
