"""Zero-skipping 2-D convolution (groups=1), NCHW in and out, skipping zero inputs.

Public API (the planner/dispatch calls exactly these)::

    prepare_conv_weights(W_oihw) -> PreparedConv                     # once, at plan time
    sparse_conv2d(x_nchw, prepared, bias, strides, pads, dilations,
                  act, p0, p1, parallel=False) -> y_nchw
    dense_conv2d(...same signature...) -> y_nchw                    # im2col + BLAS
    sparse_conv1x1_nchw(x_nchw, prepared, bias, act, p0, p1, parallel=False) -> y_nchw
    conv_output_shape(x_shape, prepared, strides, pads, dilations) -> (N, Cout, OH, OW)

Layouts: ``W_oihw`` is ONNX Conv's (Cout, Cin, KH, KW). ``prepare_conv_weights`` copies
it once to ``wt`` (ntiles, KH*KW, Cin, T): for each kernel tap and input channel, a
contiguous vector of T output channels (Cout split into tiles of T = min(128, Cout
rounded up to 16), zero-padded). ``strides`` = (sh, sw), ``pads`` = ONNX order
(top, left, bottom, right), ``dilations`` = (dh, dw). ``bias`` is (Cout,) or None,
added before the activation ``(act, p0, p1)`` (codes of
:mod:`edge_runtime.kernels.activation`). Input (N, Cin, H, W) of any float dtype or
layout (made C-contiguous float32 by the wrapper); output a new (N, Cout, OH, OW)
float32 array. auto_pad must be resolved to explicit pads by the caller.

How the sparse kernel works: per image, :func:`edge_runtime.kernels.sparse_common.
compact_pixels` turns the NCHW planes into one packed list of every pixel's nonzero
channels, each entry's index ``iw*Cin + c`` carrying its input column. For each output
pixel the kernel lists the runs of input pixels its kernel rows read (with unit
dilation a kernel row's valid taps are consecutive pixels, consecutive in the list, and
share one weight-row offset ``(ki*KW - iw0)*Cin``; padding contributes nothing) and, per
Cout tile, :func:`edge_runtime.kernels.sparse_common.accumulate_taps` runs them over the
matching rows of the (KH*KW*Cin, T) weight tile with a register-blocked T-vector
accumulator (the MatMul kernel's inner loop). Blocks of 16 output pixels start from the
bias in an L1-sized scratch, are activated together and transposed into the NCHW planes
16x16 at a time. Work ~ nnz(x) * KH*KW * Cout / (sh*sw).

1x1 Conv: the same kernel with KH=KW=1; per pixel it is the token-batched MatMul over
the C channels. :func:`sparse_conv1x1_nchw` is that call with unit strides, zero pads.

``parallel=True`` splits each image's output rows over ``numba.get_num_threads()``
threads (set with ``numba.set_num_threads``); worth it above ~8 MFLOP of effective
work (``edge_runtime.kernels.sparse_matmul.PARALLEL_MIN_FLOPS``).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numba
import numpy as np
from numba import prange
from numpy.typing import ArrayLike, NDArray

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.kernels.activation import apply_activation
from edge_runtime.kernels.fastmath import FAST
from edge_runtime.kernels.simd import transpose16
from edge_runtime.kernels.sparse_common import (
    accumulate_taps,
    activate,
    compact_pixels,
    padded_bias,
    workspace,
)
from edge_runtime.kernels.sparse_matmul import _bias_array, _check_act
from edge_runtime.sparse_layouts import PreparedConv, conv_output_shape, prepare_conv_weights

logger = logging.getLogger(__name__)

__all__ = [
    "PreparedConv",
    "prepare_conv_weights",
    "sparse_conv2d",
    "dense_conv2d",
    "sparse_conv1x1_nchw",
    "conv_output_shape",
]

# ----------------------------------------------------------------------------- numba


@numba.njit(cache=True, fastmath=FAST)
def _conv_rows(vals, idx, ptr, w2, bias, geom, act, p0, p1, scratch, out, oh0, oh1):  # pragma: no cover
    """Output rows oh0..oh1 of one image; out (Cout, OH*OW); w2 (ntiles, KH*KW*Cin, T).

    ``bias`` is zero-padded to ntiles*T (:func:`edge_runtime.kernels.sparse_common.padded_bias`).

    Output pixels go in blocks of 16 (in row-major order): the block's rows of ``scratch``
    (>= 16 rows, ntiles, T; L1-resident) start as the bias, each pixel's T-vectors are
    accumulated into its row, the activation runs once over the block (per-pixel bias and
    activation calls were 10% of the time at 95% sparsity), and the block is transposed
    into the NCHW planes, 16x16 at a time in registers
    (:func:`transpose16`; a strided scalar loop took 90 us of a 410 us 128x28x28 conv).
    Storing each pixel's Cout values straight into the planes missed L1 on every store
    (15-25% slower); transposing a whole-image scratch afterwards read it back from L2.
    """
    h, w, kwid, sh, sw, pt, pl, dh, dw, khgt = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9]
    )
    cout = out.shape[0]
    ntiles, _, t = w2.shape
    ow_n, cin = geom[10], geom[11]
    tlo = np.empty(khgt * kwid, dtype=np.int64)
    thi = np.empty(khgt * kwid, dtype=np.int64)
    tbase = np.empty(khgt * kwid, dtype=np.int64)
    flat = scratch.reshape(scratch.shape[0], ntiles * t)
    q1 = oh1 * ow_n
    width = ntiles * t
    for q0 in range(oh0 * ow_n, q1, 16):
        qe = min(q1, q0 + 16)
        blk = flat[:qe - q0]
        for r in range(qe - q0):  # the whole block's accumulators start as the bias
            for j in range(width):
                blk[r, j] = bias[j]
        for q in range(q0, qe):
            oh = q // ow_n
            iw0 = (q - oh * ow_n) * sw - pl
            nt = 0
            for ki in range(khgt):
                ih = oh * sh - pt + ki * dh
                if ih < 0 or ih >= h:
                    continue
                if dw == 1:  # the kernel row's valid taps read consecutive pixels: one run
                    kj0 = max(0, -iw0)
                    kj1 = min(kwid, w - iw0)
                    if kj0 < kj1:
                        tlo[nt] = ih * w + iw0 + kj0
                        thi[nt] = ih * w + iw0 + kj1
                        tbase[nt] = (ki * kwid - iw0) * cin  # + idx = (iw*cin + c) -> tap row
                        nt += 1
                else:
                    for kj in range(kwid):
                        iw = iw0 + kj * dw
                        if 0 <= iw < w:
                            tlo[nt] = ih * w + iw
                            thi[nt] = tlo[nt] + 1
                            tbase[nt] = (ki * kwid + kj - iw) * cin
                            nt += 1
            for tile in range(ntiles):
                accumulate_taps(scratch[q - q0, tile], w2[tile], vals, idx, ptr, tlo, thi, tbase, nt)
        activate(blk.reshape(-1), act, p0, p1)
        j16 = cout - cout % 16 if qe - q0 == 16 else 0
        for j0 in range(0, j16, 16):
            transpose16(flat, 0, j0, out, j0, q0)
        for j in range(j16, cout):
            for q in range(q0, qe):
                out[j, q] = flat[q - q0, j]


@numba.njit(cache=True, fastmath=FAST)
def _conv_kernel(x, wt, bias, geom, act, p0, p1, out, vals, idx, ptr, scratch):  # pragma: no cover
    bias = padded_bias(bias, wt.shape[0] * wt.shape[2])
    n, c, h, w = x.shape
    cout, oh_n, ow_n = out.shape[1], out.shape[2], out.shape[3]
    for i in range(n):
        compact_pixels(x[i].reshape(c, h * w), w, vals, idx, ptr)
        _conv_rows(vals, idx, ptr, wt, bias, geom, act, p0, p1, scratch,
                   out[i].reshape(cout, oh_n * ow_n), 0, oh_n)


@numba.njit(cache=True, fastmath=FAST, parallel=True)
def _conv_kernel_par(x, wt, bias, geom, act, p0, p1, out, vals, idx, ptr, scratch, block):  # pragma: no cover
    bias = padded_bias(bias, wt.shape[0] * wt.shape[2])
    n, c, h, w = x.shape
    cout, oh_n, ow_n = out.shape[1], out.shape[2], out.shape[3]
    nblocks = (oh_n + block - 1) // block
    for i in range(n):
        compact_pixels(x[i].reshape(c, h * w), w, vals, idx, ptr)
        for b in prange(nblocks):  # each block of output rows has its own 16-pixel scratch
            _conv_rows(vals, idx, ptr, wt, bias, geom, act, p0, p1, scratch[b * 16:(b + 1) * 16],
                       out[i].reshape(cout, oh_n * ow_n), b * block, min(oh_n, (b + 1) * block))


# ----------------------------------------------------------------------------- wrappers


def sparse_conv2d(
    x: ArrayLike, prepared: PreparedConv, bias: ArrayLike | None,
    strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
    dilations: Sequence[int] = (1, 1), act: int = 0, p0: float = 0.0, p1: float = 0.0,
    parallel: bool = False,
) -> NDArray[np.float32]:
    """y = act(conv2d(x, W) + b), skipping zero input activations (groups=1).

    Args:
        x: (N, Cin, H, W) input, any float dtype / layout.
        prepared: weights from :func:`prepare_conv_weights`.
        bias: (Cout,) or None; added before the activation.
        strides: (sh, sw). pads: (top, left, bottom, right). dilations: (dh, dw).
        act, p0, p1: fused activation code and parameters.
        parallel: split each image's output rows over numba's threads.

    Returns:
        (N, Cout, OH, OW) float32.

    Raises:
        InvalidInputError: shape mismatch or empty output. InvalidArgumentError: bad
        strides/pads/dilations or activation code.
    """
    _check_act(act)
    xa = np.ascontiguousarray(x, dtype=np.float32)
    n, cout, oh, ow = conv_output_shape(xa.shape, prepared, strides, pads, dilations)
    b = _bias_array(bias, cout)
    out = np.empty((n, cout, oh, ow), dtype=np.float32)
    geom = np.array([xa.shape[2], xa.shape[3], prepared.kw, strides[0], strides[1],
                     pads[0], pads[1], dilations[0], dilations[1], prepared.kh, ow, prepared.cin],
                    dtype=np.int64)
    ntiles, taps, cin, t = prepared.wt.shape
    w2 = prepared.wt.reshape(ntiles, taps * cin, t)
    hw = xa.shape[2] * xa.shape[3]
    vals = workspace("conv_vals", hw * cin, np.float32)
    idx = workspace("conv_idx", hw * cin, np.int32)
    ptr = workspace("conv_ptr", hw + 1, np.int64)
    if parallel:
        block = max(1, -(-oh // (4 * max(1, numba.get_num_threads()))))
        nblocks = -(-oh // block)
        scratch = workspace("conv_out", nblocks * 16 * ntiles * t, np.float32).reshape(nblocks * 16, ntiles, t)
        _conv_kernel_par(xa, w2, b, geom, act, float(p0), float(p1), out, vals, idx, ptr, scratch, block)
    else:
        scratch = workspace("conv_out", 16 * ntiles * t, np.float32).reshape(16, ntiles, t)
        _conv_kernel(xa, w2, b, geom, act, float(p0), float(p1), out, vals, idx, ptr, scratch)
    return out


def sparse_conv1x1_nchw(
    x: ArrayLike, prepared: PreparedConv, bias: ArrayLike | None, act: int = 0,
    p0: float = 0.0, p1: float = 0.0, parallel: bool = False,
) -> NDArray[np.float32]:
    """1x1 Conv, stride 1, no padding: :func:`sparse_conv2d` with those arguments.

    Raises:
        InvalidArgumentError: if ``prepared`` is not a 1x1 kernel.
    """
    if (prepared.kh, prepared.kw) != (1, 1):
        raise InvalidArgumentError(
            f"sparse_conv1x1_nchw needs a 1x1 kernel, got {prepared.kh}x{prepared.kw}; use sparse_conv2d"
        )
    return sparse_conv2d(x, prepared, bias, (1, 1), (0, 0, 0, 0), (1, 1), act, p0, p1, parallel)


def _im2col(xi: NDArray[np.float32], prepared: PreparedConv, strides: Sequence[int],
            pads: Sequence[int], dilations: Sequence[int], oh: int, ow: int) -> NDArray[np.float32]:
    """One image (C, H, W) -> columns (KH*KW*C, OH*OW) in the prepared (tap, c) order."""
    c = xi.shape[0]
    xp = np.pad(xi, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    cols = np.empty((prepared.kh, prepared.kw, c, oh, ow), dtype=np.float32)
    sh, sw = strides
    dh, dw = dilations
    for ki in range(prepared.kh):
        for kj in range(prepared.kw):
            r0, c0 = ki * dh, kj * dw
            cols[ki, kj] = xp[:, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw]
    return cols.reshape(prepared.kh * prepared.kw * c, oh * ow)


def dense_conv2d(
    x: ArrayLike, prepared: PreparedConv, bias: ArrayLike | None,
    strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
    dilations: Sequence[int] = (1, 1), act: int = 0, p0: float = 0.0, p1: float = 0.0,
    parallel: bool = False,
) -> NDArray[np.float32]:
    """Dense counterpart of :func:`sparse_conv2d` (im2col + numpy BLAS), same signature.

    ``parallel`` is accepted for signature compatibility (BLAS threads are the BLAS's).

    Returns:
        (N, Cout, OH, OW) float32.

    Raises:
        Same as :func:`sparse_conv2d`.
    """
    _check_act(act)
    xa = np.ascontiguousarray(x, dtype=np.float32)
    n, cout, oh, ow = conv_output_shape(xa.shape, prepared, strides, pads, dilations)
    b = _bias_array(bias, cout)
    ntiles, taps, cin, t = prepared.wt.shape
    w2 = prepared.wt.reshape(ntiles, taps * cin, t)
    out = np.empty((n, cout, oh, ow), dtype=np.float32)
    for i in range(n):
        cols = _im2col(xa[i], prepared, strides, pads, dilations, oh, ow)
        for tile in range(ntiles):
            n0 = tile * t
            width = min(t, cout - n0)
            out[i, n0:n0 + width] = (w2[tile, :, :width].T @ cols).reshape(width, oh, ow)
    if b.shape[0]:
        out += b.reshape(1, cout, 1, 1)
    return apply_activation(out, act, p0, p1)
