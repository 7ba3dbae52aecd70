"""Dense convolution: plan-time weight preparation + im2col/sgemm with a fused epilogue.

Public API (the sparse dispatch in kernels/sparse_conv.py wraps these)::

    prep = prepare_conv(W, group)           # once, at plan time (W: (Cout, Cin/group, *k))
    y = dense_conv(x, prep, bias, strides, pads, dilations, act, p0, p1)   # 1-D/2-D/3-D
    y = dense_conv2d(x, prep, bias, strides, pads, dilations, act, p0, p1) # x (N, C, H, W)

``pads`` are explicit ONNX pads (begins then ends); resolve ``auto_pad`` first with
:func:`edge_runtime.kernels.geometry.resolve_pads`. ``act, p0, p1`` is a fused
activation (codes in kernels/activation.py) applied in the epilogue together with
the bias, in one pass over the output.

Paths, chosen per call:

* depthwise (group == Cin == Cout): numba direct loop (kernels/depthwise.py);
* 3x3, stride 1, dilation 1, groups 1, Cin and Cout >= ``WINOGRAD_MIN_CHANNELS``, output
  at least ``WINOGRAD_MIN_OUT`` on each side: Winograd F(2x2, 3x3) (kernels/winograd.py;
  measured table and rule in docs/dense_kernels.md);
* other groups-1 1-D/2-D convs with a kernel bigger than 1x1 and at least ``DIRECT_MIN_TAPS``
  taps (Cin * kh * kw), on AVX2/NEON targets only up to ``DIRECT_MAX_OUT_CHANNELS`` outputs:
  the register-blocked direct kernel on shifted input planes (kernels/direct_conv.py; no
  im2col, no BLAS);
* 1x1, stride 1, no pads: no im2col at all; groups-1 convs whose H*W is whole 16-float
  tiles and Cout a multiple of ``direct_conv.OB`` (and within ``DIRECT_MAX_OUT_CHANNELS``)
  run the direct tiles in place (no copies,
  :func:`direct_conv.pointwise_conv2d`), others ``W (Cout, Cin) @ X (Cin, H*W)`` per image and
  group, written straight into the output;
* other 1-D/2-D (grouped, 1x1 with pads or strides, fewer taps): numba im2col into a preallocated
  (Cin/g*kh*kw, OH*OW) buffer (no padded copy of x), then one sgemm per image and group
  into the output; buffers over ``TILE_ABOVE_BYTES`` are built a chunk of output rows at a
  time (~0.5 MB, L2-sized) with one sgemm per chunk into its slice of the output;
* 3-D: numpy im2col from a padded copy, same sgemm.

References §2: im2col + BLAS reaches 0.6-0.8x of onnxruntime on 3x3 convs at 1 thread.
BLAS threads are numpy's (OpenBLAS) pool: set them with threadpoolctl or
OPENBLAS_NUM_THREADS; the direct kernel and the numba loops here are single-threaded (on a
shared 2-core machine a spinning pool costs more than it gains, and numba's OpenMP workers
beside OpenBLAS's pool cost 10x: docs/dense_kernels.md).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numba
import numpy as np
from numba import uint64 as u64
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, UnsupportedOpError
from edge_runtime.kernels.activation import bias_act_rows
from edge_runtime.kernels.depthwise import depthwise_conv2d, valid_range
from edge_runtime.kernels.direct_conv import OB, DirectWeights, direct_conv2d, direct_weights, pointwise_conv2d
from edge_runtime.kernels.simd import VEC, host_has_avx512
from edge_runtime.kernels.fastmath import FAST
from edge_runtime.kernels.geometry import conv_out_spatial
from edge_runtime.kernels.winograd import winograd_conv2d, winograd_weights

#: Winograd needs this many input and output channels: measured (docs/dense_kernels.md) 0.7-0.8x
#: the im2col time at 64-512 channels, no gain at 32 (the 16 small GEMMs have K = Cin); against
#: the direct kernel (kernels/direct_conv.py) it still wins at 256 @14 (1.12 vs 1.35 ms), not at
#: 64 @56 (1.38 vs 1.31) or 128 @28 (1.49 vs 1.40).
WINOGRAD_MIN_CHANNELS = 256
#: ...and an output at least this big on each side: at 7x7 (16 tiles) the GEMMs are too narrow
#: and im2col wins (1.1-1.2x slower with Winograd); 14x14 and up win.
WINOGRAD_MIN_OUT = 14

#: The direct kernel needs at least this many taps (Cin/group * prod(kernel)) per output value: with
#: fewer, its register tiles do little work per store and im2col + one sgemm wins (1 -> 64 3x3 @28:
#: 48 vs 41 us per call; 3 -> 16 3x3 @128, 27 taps: 0.22 vs 0.42 ms for direct).
DIRECT_MIN_TAPS = 16
#: Where numba's target has no AVX-512 (AVX2, NEON), the direct kernel's 4 x 1 register block only
#: takes convs with at most this many outputs: on the AVX2 proxy it beat im2col + sgemm 1.1-2.4x on
#: 16-32 output channels and lost 1.1-1.9x at 64 and more (bench_direct_conv_avx2.json; that sgemm
#: still ran AVX-512 OpenBLAS, so the rule errs toward im2col). None: every width (AVX-512).
DIRECT_MAX_OUT_CHANNELS = None if host_has_avx512() else 32


@dataclass(frozen=True)
class PreparedConv:
    """Conv weights re-laid out once for the dense kernels.

    Attributes:
        weight: (group, Cout/group, Cin/group * prod(kernel)) float32, C-contiguous:
            row-major GEMM operand per group; None where ``direct`` runs every call.
        kernel_shape: spatial kernel sizes.
        group: number of groups.
        in_channels: total input channels (Cin).
        out_channels: total output channels (Cout).
        depthwise: (C, kh, kw) filters when this is a 2-D depthwise conv, else None.
        winograd: (16, Cout, Cin) Winograd F(2x2, 3x3) weights (kernels/winograd.py) when this
            is a 3x3 groups-1 conv with enough channels, else None; used for stride-1,
            dilation-1 calls with a big enough output. Costs 16/9 of the weight memory again.
        direct: the weights packed for the direct kernel (kernels/direct_conv.py) when this is a
            groups-1 1-D or 2-D conv with a kernel bigger than 1x1, at least
            ``DIRECT_MIN_TAPS`` taps per output and (AVX2/NEON) at most
            ``DIRECT_MAX_OUT_CHANNELS`` outputs, else None.
        lazy: layouts built on first use (a 1x1 conv's packing for the zero-copy direct tiles).

    Example:
        >>> p = prepare_conv(np.ones((8, 4, 3, 3), np.float32), group=1)
        >>> p.direct.packed.shape[1], p.weight is None
        (36, True)
        >>> prepare_conv(np.ones((8, 4, 1, 1), np.float32)).weight.shape
        (1, 8, 4)
    """

    weight: NDArray[np.float32] | None
    kernel_shape: tuple[int, ...]
    group: int
    in_channels: int
    out_channels: int
    depthwise: NDArray[np.float32] | None = None
    winograd: NDArray[np.float32] | None = None
    direct: DirectWeights | None = None
    lazy: dict = field(default_factory=dict, compare=False, repr=False)


def prepare_conv(w: NDArray[np.floating], group: int = 1) -> PreparedConv:
    """Re-lay out ONNX Conv weights (Cout, Cin/group, *kernel) for :func:`dense_conv`.

    Args:
        w: weights, any float dtype; converted to float32.
        group: the Conv ``group`` attribute.

    Returns:
        A :class:`PreparedConv`.

    Raises:
        InvalidInputError: w has rank < 3 or Cout is not divisible by group.
    """
    w = np.asarray(w)
    if w.ndim < 3 or group < 1 or w.shape[0] % group != 0:
        raise InvalidInputError(
            f"Conv weight of shape {w.shape} with group={group} is invalid; expected "
            f"(Cout, Cin/group, *kernel) with rank >= 3 and Cout divisible by group. Fix the model's weights.")
    cout, cin_g = int(w.shape[0]), int(w.shape[1])
    kernel = tuple(int(k) for k in w.shape[2:])
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    direct = None
    depthwise = cin_g == 1 and group == cout  # (a 1-in 1-out conv too: the depthwise loop runs it)
    if (group == 1 and not depthwise and len(kernel) in (1, 2) and math.prod(kernel) > 1
            and cin_g * math.prod(kernel) >= DIRECT_MIN_TAPS
            and (DIRECT_MAX_OUT_CHANNELS is None or cout <= DIRECT_MAX_OUT_CHANNELS)):
        direct = direct_weights(w32.reshape(cout, cin_g, *((1,) * (2 - len(kernel))), *kernel))
    packed = None if direct is not None else np.ascontiguousarray(w32.reshape(group, cout // group, -1))
    dw = None
    if depthwise and len(kernel) == 2:
        dw = np.ascontiguousarray(w32.reshape(cout, *kernel))
    wino = None
    if kernel == (3, 3) and group == 1 and min(cin_g, cout) >= WINOGRAD_MIN_CHANNELS:
        wino = winograd_weights(w32)
    return PreparedConv(packed, kernel, group, cin_g * group, cout, dw, wino, direct)


@numba.njit(cache=True, boundscheck=False)
def _im2col2d(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh0, oh1, ow_n):  # pragma: no cover (numba)
    # Output rows [oh0, oh1) only; column (oh - oh0) * ow_n + ow of cols.
    # Unsigned indices on row views: no wraparound test, so the copies vectorise.
    ch, hgt, wid = x.shape
    for c in range(ch):
        for i in range(kh):
            for j in range(kw):
                crow = cols[(c * kh + i) * kw + j]
                off = j * dw - pw
                lo, hi = valid_range(off, sw, wid, ow_n)
                for oh in range(oh0, oh1):
                    ih = oh * sh - ph + i * dh
                    dst = crow[(oh - oh0) * ow_n:(oh - oh0 + 1) * ow_n]
                    if ih < 0 or ih >= hgt:
                        for ow in range(ow_n):
                            dst[u64(ow)] = 0.0
                        continue
                    src = x[c, ih]
                    for ow in range(lo):
                        dst[u64(ow)] = 0.0
                    if sw == 1:
                        for ow in range(lo, hi):
                            dst[u64(ow)] = src[u64(ow + off)]
                    else:
                        for ow in range(lo, hi):
                            dst[u64(ow)] = src[u64(ow * sw + off)]
                    for ow in range(hi, ow_n):
                        dst[u64(ow)] = 0.0


def _im2col_nd(x: NDArray[np.float32], kernel: Sequence[int], strides: Sequence[int],
               pads: Sequence[int], dilations: Sequence[int], out_sp: Sequence[int]) -> NDArray[np.float32]:
    """numpy im2col for any rank: x (C, *sp) -> (C*prod(kernel), prod(out_sp))."""
    nd = len(kernel)
    xp = np.pad(x, [(0, 0)] + [(pads[i], pads[nd + i]) for i in range(nd)])
    cols = np.empty((x.shape[0], int(np.prod(kernel)), *out_sp), np.float32)
    for t, offs in enumerate(itertools.product(*[range(k) for k in kernel])):
        sl = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                   for o, d, n, s in zip(offs, dilations, out_sp, strides))
        cols[:, t] = xp[(slice(None),) + sl]
    return cols.reshape(x.shape[0] * int(np.prod(kernel)), -1)


def _check_input(x: NDArray[np.float32], prep: PreparedConv) -> None:
    nd = len(prep.kernel_shape)
    if x.ndim != nd + 2 or x.shape[1] != prep.in_channels:
        raise InvalidInputError(
            f"Conv input of shape {x.shape} does not match weights: expected (N, {prep.in_channels}, "
            f"<{nd} spatial dims>) for kernel {prep.kernel_shape} and group {prep.group}. "
            f"Check the producer of this tensor or the model's weights.")


def dense_conv(x: NDArray[np.float32], prep: PreparedConv, bias: NDArray[np.float32] | None = None,
               strides: Sequence[int] | None = None, pads: Sequence[int] | None = None,
               dilations: Sequence[int] | None = None, act: int = 0, p0: float = 0.0,
               p1: float = 0.0) -> NDArray[np.float32]:
    """Dense N-d convolution (N = 1, 2, 3 spatial dims) with bias and fused activation.

    Args:
        x: (N, Cin, *spatial) float32.
        prep: from :func:`prepare_conv`.
        bias: (Cout,) or None.
        strides, dilations: per spatial dim (default 1).
        pads: explicit begins-then-ends pads (default 0).
        act, p0, p1: fused activation code and parameters (kernels/activation.py).

    Returns:
        (N, Cout, *out_spatial) float32, C-contiguous.

    Raises:
        InvalidInputError: x does not match the prepared weights.
        UnsupportedOpError: more than 3 spatial dims.
    """
    nd = len(prep.kernel_shape)
    if nd > 3:
        raise UnsupportedOpError(
            f"Conv with {nd} spatial dims is not supported; edge_runtime supports 1-D, 2-D and 3-D convs.")
    strides = list(strides) if strides is not None else [1] * nd
    dilations = list(dilations) if dilations is not None else [1] * nd
    pads = list(pads) if pads is not None else [0] * (2 * nd)
    _check_input(x, prep)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if nd == 1:  # run as 2-D with a height of 1
        y = dense_conv2d(x[:, :, None, :], _as_2d(prep), bias, [1, strides[0]],
                         [0, pads[0], 0, pads[1]], [1, dilations[0]], act, p0, p1)
        return y[:, :, 0, :]
    if nd == 2:
        return dense_conv2d(x, prep, bias, strides, pads, dilations, act, p0, p1)
    out_sp = conv_out_spatial(x.shape[2:], prep.kernel_shape, strides, dilations, pads)
    y = _gemm_conv(x, prep, out_sp,
                   lambda xg: _im2col_nd(xg, prep.kernel_shape, strides, pads, dilations, out_sp))
    return _epilogue(y, bias, act, p0, p1)


def _as_2d(prep: PreparedConv) -> PreparedConv:
    """View a 1-D conv's prepared weights as a 2-D conv with a 1-row kernel."""
    dw = None
    if prep.in_channels == prep.group == prep.out_channels:
        dw = prep.weight.reshape(prep.out_channels, 1, prep.kernel_shape[0])
    return PreparedConv(prep.weight, (1,) + prep.kernel_shape, prep.group, prep.in_channels,
                        prep.out_channels, dw, None, prep.direct, prep.lazy)


def dense_conv2d(x: NDArray[np.float32], prep: PreparedConv, bias: NDArray[np.float32] | None = None,
                 strides: Sequence[int] = (1, 1), pads: Sequence[int] = (0, 0, 0, 0),
                 dilations: Sequence[int] = (1, 1), act: int = 0, p0: float = 0.0,
                 p1: float = 0.0) -> NDArray[np.float32]:
    """Dense 2-D convolution; see :func:`dense_conv` (x is (N, Cin, H, W) float32, contiguous).

    Raises:
        InvalidInputError: x does not match the prepared weights.
    """
    _check_input(x, prep)
    if x.shape[0] == 0:  # no images: Mask R-CNN's mask head when no box passed the score threshold
        return np.zeros((0, prep.out_channels, *conv_out_spatial(x.shape[2:], prep.kernel_shape, strides,
                                                                 dilations, pads)), np.float32)
    if prep.depthwise is not None:
        return depthwise_conv2d(x, prep.depthwise, bias, strides, pads, dilations, act, p0, p1)
    kh, kw = prep.kernel_shape
    sh, sw = int(strides[0]), int(strides[1])
    oh, ow = conv_out_spatial(x.shape[2:], prep.kernel_shape, strides, dilations, pads)
    if _use_winograd(prep, strides, dilations, oh, ow) and np.isfinite(x.sum()):
        # Winograd's transforms subtract inputs: an infinite input gives inf - inf = NaN where the
        # direct convolution (and onnxruntime) gives +-inf, so non-finite inputs take the direct path
        return winograd_conv2d(x, prep.winograd, bias, pads, act, p0, p1)
    if prep.direct is not None:
        return direct_conv2d(x, prep.direct, bias, strides, pads, dilations, (oh, ow), act, p0, p1)
    if kh == 1 and kw == 1 and not any(pads):
        if (sh == sw == 1 and prep.group == 1 and x.shape[2] * x.shape[3] % VEC == 0 and prep.out_channels % OB == 0
                and (DIRECT_MAX_OUT_CHANNELS is None or prep.out_channels <= DIRECT_MAX_OUT_CHANNELS)):
            y = pointwise_conv2d(x, _pointwise_weights(prep), bias, act, p0, p1)
            if y is not None:
                return y
        if sh != 1 or sw != 1:
            x = np.ascontiguousarray(x[:, :, ::sh, ::sw][:, :, :oh, :ow])
        y = _gemm_conv(x, prep, (oh, ow), lambda xg: xg.reshape(xg.shape[0], -1))
    else:
        geo = (kh, kw, sh, sw, int(pads[0]), int(pads[1]), int(dilations[0]), int(dilations[1]))
        y = _tiled_im2col_conv(x, prep, oh, ow, geo)
    return _epilogue(y, bias, act, p0, p1)


def _pointwise_weights(prep: PreparedConv) -> DirectWeights:
    """The direct kernel's packing of a 1x1 conv's weights, built on the first call that can use it
    (zero-copy tiles, :func:`pointwise_conv2d`) and kept: 1x1 convs whose outputs never fit whole
    tiles never hold the second copy."""
    dw = prep.lazy.get("pointwise")
    if dw is None:
        dw = prep.lazy["pointwise"] = direct_weights(prep.weight[0].reshape(prep.out_channels, prep.in_channels, 1, 1))
    return dw


def _use_winograd(prep: PreparedConv, strides: Sequence[int], dilations: Sequence[int], oh: int,
                  ow: int) -> bool:
    """Winograd weights exist, stride and dilation are 1, and the output is big enough."""
    return (prep.winograd is not None and tuple(int(s) for s in strides) == (1, 1)
            and tuple(int(d) for d in dilations) == (1, 1)
            and min(oh, ow) >= WINOGRAD_MIN_OUT)


#: im2col buffers up to this size are built whole (one GEMM per image and group); measured:
#: tiling helped ResNet's 56x56x64 (7 MB) and the 7x7 stem (7 MB), not the 28x28x128 (3.6 MB).
TILE_ABOVE_BYTES = 4 * 1024 * 1024
#: Bytes of im2col buffer per GEMM when tiling: a chunk of output rows whose columns stay in L2
#: (576 x 3136 floats for ResNet's 56x56x64 3x3 conv is 7 MB; chunks of ~4 rows are 0.5 MB).
COLS_CHUNK_BYTES = 512 * 1024
#: ...but never fewer output pixels per GEMM than this (narrow GEMMs lose more than L2 saves).
MIN_CHUNK_PIXELS = 512


def _tiled_im2col_conv(x, prep: PreparedConv, oh: int, ow: int, geo: tuple[int, ...]) -> NDArray[np.float32]:
    """im2col + sgemm over chunks of output rows, each chunk's GEMM written into its slice of y."""
    n_img, g_n = x.shape[0], prep.group
    cout_g, cin_g = prep.out_channels // g_n, prep.in_channels // g_n
    k_rows = prep.weight.shape[2]
    pixels = max(MIN_CHUNK_PIXELS, COLS_CHUNK_BYTES // (4 * k_rows))
    rows = max(1, min(oh, -(-pixels // ow)))
    if 4 * k_rows * oh * ow <= TILE_ABOVE_BYTES:
        rows = oh
    cols = np.empty((k_rows, rows * ow), np.float32)
    y = np.empty((n_img, prep.out_channels, oh * ow), np.float32)
    for n in range(n_img):
        for g in range(g_n):
            xg = x[n, g * cin_g:(g + 1) * cin_g]
            yg = y[n, g * cout_g:(g + 1) * cout_g]
            for r0 in range(0, oh, rows):
                r1 = min(oh, r0 + rows)
                _im2col2d(xg, cols, *geo, r0, r1, ow)
                np.matmul(prep.weight[g], cols[:, :(r1 - r0) * ow], out=yg[:, r0 * ow:r1 * ow])
    return y.reshape(n_img, prep.out_channels, oh, ow)


def _gemm_conv(x, prep: PreparedConv, out_sp, to_cols) -> NDArray[np.float32]:
    """y[n, group g] = W[g] @ to_cols(x[n, group g]) for every image and group."""
    n_img = x.shape[0]
    g_n, cout_g = prep.group, prep.out_channels // prep.group
    cin_g = prep.in_channels // g_n
    y = np.empty((n_img, prep.out_channels, int(np.prod(out_sp))), np.float32)
    for n in range(n_img):
        for g in range(g_n):
            cols = to_cols(x[n, g * cin_g:(g + 1) * cin_g])
            np.matmul(prep.weight[g], cols, out=y[n, g * cout_g:(g + 1) * cout_g])
    return y.reshape(n_img, prep.out_channels, *out_sp)


def _epilogue(y: NDArray[np.float32], bias: NDArray[np.float32] | None, act: int, p0: float,
              p1: float) -> NDArray[np.float32]:
    """Add bias and apply the activation in one in-place pass."""
    if (bias is None and act == 0) or y.size == 0:
        return y
    b = np.zeros(y.shape[1], np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    flat = y.reshape(y.shape[0] * y.shape[1], -1)
    bb = np.tile(b, y.shape[0]) if y.shape[0] > 1 else b
    bias_act_rows(flat, bb, int(act), float(p0), float(p1))
    return y
