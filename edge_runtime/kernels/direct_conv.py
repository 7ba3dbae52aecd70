"""Dense 2-D convolution without im2col: a register-blocked direct kernel on shifted input planes.

im2col + sgemm copies every input value ``kh*kw`` times and then hands OpenBLAS a GEMM whose
shapes (K = Cin*9 of 144-576, M = Cout of 16-64) it runs at 70-90 GFLOP/s here; on the
narrow convs of YOLO-style detectors the sgemm alone took longer than onnxruntime's whole
conv (docs/benchmarks.md). This kernel reads the input in place instead:

* The input is copied once into zero-padded *phase planes*: for stride ``s``, plane
  ``(a, b)`` holds the padded input's rows ``a, a+s, ...`` and columns ``b, b+s, ...``
  (``s = 1``: one padded copy). Output pixel ``(oh, ow)`` at flat position
  ``q = oh * Wq + ow`` then reads tap ``(i, j)`` of channel ``c`` at the fixed offset
  ``xoff[c, i, j] + q`` of one flat buffer: every tap is a contiguous run of ``q``. Rows
  are computed over the planes' full width ``Wq``; the columns past the output width are
  computed and dropped (``Wq - OW`` of ``Wq``: 2 of 12 at 10 px, 2 of 162 at 160 px).
* :func:`conv_tile` holds ``ob`` output channels x ``r`` vectors of 16 consecutive ``q`` in
  registers and walks the ``K = Cin*kh*kw`` taps: per tap ``r`` vector loads of the input,
  ``ob`` broadcast weights, ``ob*r`` FMAs. The weights are packed once per layer as
  ``(Cout/ob, K, ob)`` so the broadcasts walk memory in order.
* The epilogue copies the ``OW`` valid columns of each row into the output with the bias,
  then the fused activation (kernels/activation.py) runs over the channel plane.
* :func:`pointwise_conv2d`: 1x1 convs whose H*W is whole tiles skip both copies.

Measured against im2col + sgemm and onnxruntime in docs/dense_kernels.md ("Direct
convolution"); :func:`edge_runtime.kernels.conv.prepare_conv` decides which convs take it
(groups 1, kernel bigger than 1x1, enough taps; on AVX2/NEON only narrow outputs). Tiles run
on the calling thread (see below).
"""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba import uint64 as u64
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numpy.typing import NDArray

from edge_runtime.kernels.activation import act_inplace, bias_act_rows
from edge_runtime.kernels.fastmath import FAST
from edge_runtime.kernels.simd import VEC, check_array, host_has_avx512

__all__ = ["DirectWeights", "direct_weights", "direct_conv2d", "pointwise_conv2d", "conv_tile", "tap_offsets", "OB"]

#: Output channels per register block, and the 16-float vectors of positions per block a call may
#: take: 8 x 1-3 are 8-24 of AVX-512's 32 zmm registers; 4 x 1 keeps AVX2's 16 ymm registers (2 per
#: vector) and NEON's 32 q registers (4 per vector) free of spills. Measured in docs/dense_kernels.md.
OB, NR_MAX = (8, 3) if host_has_avx512() else (4, 1)


#: Relative time per position of a tile of 1, 2, 3 vectors on AVX-512: one vector loads 9 values
#: (1 input vector, 8 weights) per 8 FMAs and is load-bound; measured 7-25% slower than 2 (16->32
#: @160 s2: 0.395 vs 0.369 ms kernel time; 128 @10: 0.209 vs 0.167); 3 was ~3% faster than 2 on
#: outputs over 1000 positions.
TILE_COST = (1.15, 1.0, 0.97)


def vectors_per_tile(positions: int) -> int:
    """The vectors per tile (1..NR_MAX) with the least padded positions x ``TILE_COST``: on
    AVX-512, 1 for 16 positions, 2 for 110 (a 10x10 output on 11-wide planes), 3 for 420."""
    return min(range(1, NR_MAX + 1), key=lambda nr: -(-positions // (VEC * nr)) * VEC * nr * TILE_COST[nr - 1])


def _literal(value, who):
    if not isinstance(value, types.IntegerLiteral):
        raise TypingError(f"conv_tile: {who} must be a literal int, got {value}")
    return int(value.literal_value)


@intrinsic
def conv_tile(typingctx, y, w, x, xoff, kn, blk, q0, ystride, ob, nr):
    """y[blk*ob + o, q0 + 16*j + l] = sum_k w[blk, k, o] * x[xoff[k] + q0 + 16*j + l].

    For o < ob, j < nr, l < 16, k < kn, with the ``ob * nr`` accumulators in registers. ``y``,
    ``x`` 1-D float32 and ``w`` (nblk, kn, ob) float32, C-contiguous; ``xoff`` 1-D int64;
    ``ystride`` is y's row length. ``ob`` and ``nr`` must be compile-time constants. No bounds
    checks: callers guarantee every read and write is inside the arrays.
    """
    for name, ty, nd, dt in (("y", y, 1, types.float32), ("w", w, 3, types.float32), ("x", x, 1, types.float32),
                             ("xoff", xoff, 1, types.int64)):
        check_array(f"conv_tile: {name}", ty, nd, dt)
    nob, nvec = _literal(ob, "ob"), _literal(nr, "nr")
    sig = types.void(y, w, x, xoff, kn, blk, q0, ystride, ob, nr)

    def codegen(context, builder, signature, args):
        b = builder
        ya, wa, xa, oa = (context.make_array(signature.args[j])(context, b, args[j]) for j in range(4))
        i64 = ir.IntType(64)
        kn_, blk_, q0_, ys_ = (context.cast(b, args[j], signature.args[j], types.int64) for j in (4, 5, 6, 7))
        vty = ir.VectorType(ir.FloatType(), VEC)
        vptr = vty.as_pointer()
        fma = cgutils.get_or_insert_function(b.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{VEC}f32")
        accs = [[cgutils.alloca_once_value(b, ir.Constant(vty, None)) for _ in range(nvec)] for _ in range(nob)]
        c_ob = ir.Constant(i64, nob)
        wbase = b.gep(wa.data, [b.mul(b.mul(blk_, kn_), c_ob)])
        xq = b.gep(xa.data, [q0_])
        lane0 = ir.Constant(ir.IntType(32), 0)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), VEC), None)
        with cgutils.for_range(b, kn_, intp=i64) as loop:
            k = loop.index
            xp = b.gep(xq, [b.load(b.gep(oa.data, [k]))])
            xv = [b.load(b.bitcast(b.gep(xp, [ir.Constant(i64, VEC * j)]), vptr), align=4) for j in range(nvec)]
            wrow = b.gep(wbase, [b.mul(k, c_ob)])
            for o in range(nob):
                ws = b.load(b.gep(wrow, [ir.Constant(i64, o)]))
                vs = b.shuffle_vector(b.insert_element(ir.Constant(vty, None), ws, lane0), ir.Constant(vty, None), splat)
                for j in range(nvec):
                    b.store(b.call(fma, [vs, xv[j], b.load(accs[o][j])]), accs[o][j])
        ybase = b.gep(ya.data, [b.add(b.mul(b.mul(blk_, c_ob), ys_), q0_)])
        for o in range(nob):
            yrow = b.gep(ybase, [b.mul(ir.Constant(i64, o), ys_)])
            for j in range(nvec):
                b.store(b.load(accs[o][j]), b.bitcast(b.gep(yrow, [ir.Constant(i64, VEC * j)]), vptr), align=4)
        return context.get_dummy_value()

    return sig, codegen


#: Tiles per chunk: every output-channel block runs over one chunk of ``8 * VEC * nr`` positions
#: before the next, so the chunk's input window (Cin * taps rows of ~CHUNK floats) stays in L1/L2.
CHUNK_TILES = 8


@numba.njit(cache=True, fastmath=FAST)
def _chunk(yb, wp, xf, xoff, blk, c0, qpad, nr):  # pragma: no cover (numba)
    """The tiles of output-channel block ``blk`` in the chunk at ``c0``, ``nr`` vectors each (the
    register block is a compile-time constant: one branch per width)."""
    kn = xoff.shape[0]
    c1 = min(qpad, c0 + CHUNK_TILES * VEC * nr)
    if nr == 3:
        for q0 in range(c0, c1, VEC * 3):
            conv_tile(yb, wp, xf, xoff, kn, blk, q0, qpad, OB, 3)
    elif nr == 2:
        for q0 in range(c0, c1, VEC * 2):
            conv_tile(yb, wp, xf, xoff, kn, blk, q0, qpad, OB, 2)
    else:
        for q0 in range(c0, c1, VEC):
            conv_tile(yb, wp, xf, xoff, kn, blk, q0, qpad, OB, 1)


@numba.njit(cache=True, fastmath=FAST)
def _tiles(yb, wp, xf, xoff, nblk, qpad, nr):  # pragma: no cover (numba)
    chunk = CHUNK_TILES * VEC * nr
    for c0 in range(0, qpad, chunk):
        for blk in range(nblk):
            _chunk(yb, wp, xf, xoff, blk, c0, qpad, nr)


@numba.njit(cache=True)
def tap_offsets(kh, kw, sh, sw, dh, dw, cin, hq, wq):  # pragma: no cover (numba)
    """xoff[c*kh*kw + i*kw + j]: where tap (i, j) of channel c starts in :func:`_phase_planes`'s
    buffer, relative to the output's flat position (phase ((i*dh) % sh, (j*dw) % sw), shifted by
    ((i*dh) // sh) rows and ((j*dw) // sw) columns of the hq x wq planes)."""
    plane = hq * wq
    xoff = np.empty(cin * kh * kw, np.int64)
    for c in range(cin):
        for i in range(kh):
            for j in range(kw):
                phase = ((i * dh) % sh) * sw + (j * dw) % sw
                xoff[(c * kh + i) * kw + j] = ((phase * cin + c) * plane + ((i * dh) // sh) * wq
                                              + (j * dw) // sw)
    return xoff


@numba.njit(cache=True, boundscheck=False)
def _phase_planes(x, xf, sh, sw, ph, pw, hq, wq):  # pragma: no cover (numba)
    """xf[((a*sw + b)*C + c)*hq*wq + i*wq + j] = padded x[c, i*sh + a, j*sw + b], each entry written once.

    Each input row is first copied into a zero-padded row of ``wq * sw`` floats (contiguous), which
    is then dealt out to its ``sw`` column phases (stride 2: one interleaved load pair per two
    outputs, where a strided read of the input row was a gather). Entries past the planes (read
    only for the dropped positions past the output) are zeroed."""
    ch, hgt, wid = x.shape
    plane = hq * wq
    xf[sh * sw * ch * plane:] = 0.0
    row = np.zeros(wq * sw + 1, np.float32)
    lo, hi = pw, min(wid + pw, wq * sw)  # the input's columns inside the padded row
    for c in range(ch):
        for a in range(sh):
            for i in range(hq):
                ih = i * sh + a - ph
                r0 = ((a * sw * ch + c) * hq + i) * wq  # phase (a, 0); phase (a, b) is b*ch*plane further
                if ih < 0 or ih >= hgt:
                    for bb in range(sw):
                        for j in range(wq):
                            xf[u64(r0 + bb * ch * plane + j)] = 0.0
                    continue
                if sw == 1:
                    for j in range(lo):
                        xf[u64(r0 + j)] = 0.0
                    for j in range(lo, hi):
                        xf[u64(r0 + j)] = x[c, ih, u64(j - pw)]
                    for j in range(hi, wq):
                        xf[u64(r0 + j)] = 0.0
                    continue
                for j in range(lo, hi):
                    row[u64(j)] = x[c, ih, u64(j - pw)]
                if sw == 2:
                    r1 = r0 + ch * plane
                    for j in range(wq):
                        xf[u64(r0 + j)] = row[u64(2 * j)]
                        xf[u64(r1 + j)] = row[u64(2 * j + 1)]
                else:
                    for bb in range(sw):
                        rb = r0 + bb * ch * plane
                        for j in range(wq):
                            xf[u64(rb + j)] = row[u64(j * sw + bb)]


@numba.njit(cache=True, fastmath=FAST, boundscheck=False)
def _extract(yb, y, bias, wq, act, p0, p1):  # pragma: no cover (numba)
    """y[o] = act(yb[o, oh*wq : oh*wq + ow] rows + bias[o]): the valid columns, bias, activation."""
    cout, oh_n, ow_n = y.shape
    for o in range(cout):
        b = bias[o]
        src = yb[o]
        dst = y[o]
        for i in range(oh_n):
            row = dst[i]
            s0 = i * wq
            for j in range(ow_n):
                row[u64(j)] = src[u64(s0 + j)] + b
        if act != 0:
            act_inplace(dst.reshape(oh_n * ow_n), act, p0, p1)


class DirectWeights:
    """A groups-1 2-D conv's weights packed for :func:`conv_tile`: (ceil(Cout/OB), K, OB), zero-padded.

    ``geometry`` caches, per input shape and window, the tap offsets and buffer sizes of a call
    (one dict entry per shape, written whole: safe for concurrent runs)."""

    __slots__ = ("packed", "out_channels", "in_channels", "kernel_shape", "zero_bias", "geometry")

    def __init__(self, packed: NDArray[np.float32], out_channels: int, in_channels: int,
                 kernel_shape: tuple[int, int]) -> None:
        self.packed = packed
        self.out_channels = out_channels
        self.in_channels = in_channels
        self.kernel_shape = kernel_shape
        self.zero_bias = np.zeros(out_channels, np.float32)
        self.geometry: dict[tuple, tuple] = {}


def direct_weights(w: NDArray[np.float32]) -> DirectWeights:
    """Pack (Cout, Cin, kh, kw) float32 weights for :func:`direct_conv2d`."""
    cout, cin, kh, kw = (int(d) for d in w.shape)
    nblk = -(-cout // OB)
    rows = np.zeros((nblk * OB, cin * kh * kw), np.float32)
    rows[:cout] = w.reshape(cout, -1)
    packed = np.ascontiguousarray(rows.reshape(nblk, OB, -1).transpose(0, 2, 1))
    return DirectWeights(packed, cout, cin, (kh, kw))


# The tiles run on the calling thread: numba's OpenMP workers and OpenBLAS's pool (the 1x1 and
# im2col convs of the same run) spin on the same cores. With ``prange`` over the tiles, YOLO 320 on
# the numba engine at 2 threads took 172.9 ms against 16.3 ms serial (docs/dense_kernels.md).

def _geometry(dw: DirectWeights, hgt: int, wid: int, strides: Sequence[int], pads: Sequence[int],
              dilations: Sequence[int], out_hw: tuple[int, int]) -> tuple:
    """(xoff, sh, sw, top, left, hq, wq, qpad, nr, x buffer size, y buffer size) of one call."""
    kh, kw = dw.kernel_shape
    cin = dw.in_channels
    sh, sw = int(strides[0]), int(strides[1])
    oh, ow = out_hw
    hq, wq = -(-(hgt + int(pads[0]) + int(pads[2])) // sh), -(-(wid + int(pads[1]) + int(pads[3])) // sw)
    xoff = tap_offsets(kh, kw, sh, sw, int(dilations[0]), int(dilations[1]), cin, hq, wq)
    nr = vectors_per_tile(oh * wq)
    qpad = -(-(oh * wq) // (VEC * nr)) * VEC * nr
    xsize = max(sh * sw * cin * hq * wq, int(xoff.max()) + qpad)  # tiles read qpad past each offset
    return xoff, sh, sw, int(pads[0]), int(pads[1]), hq, wq, qpad, nr, xsize, dw.packed.shape[0] * OB * qpad


def direct_conv2d(x: NDArray[np.float32], dw: DirectWeights, bias: NDArray[np.float32] | None,
                  strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
                  out_hw: tuple[int, int], act: int = 0, p0: float = 0.0, p1: float = 0.0) -> NDArray[np.float32]:
    """act(conv2d(x, W) + bias) for x (N, Cin, H, W) float32 C-contiguous; see the module docstring.

    ``pads`` are explicit (top, left, bottom, right) pads, ``out_hw`` the output size the caller
    computed from them.
    """
    from edge_runtime.kernels.sparse_common import workspace  # here: importing conv stays as cheap as before
    n, _, hgt, wid = x.shape
    key = (hgt, wid, *strides, *pads, *dilations)
    geo = dw.geometry.get(key)
    if geo is None:
        geo = dw.geometry[key] = _geometry(dw, hgt, wid, strides, pads, dilations, out_hw)
    xoff, sh, sw, top, left, hq, wq, qpad, nr, xsize, ysize = geo
    xf = workspace("direct_conv_x", xsize, np.float32)
    yb = workspace("direct_conv_y", ysize, np.float32).reshape(-1, qpad)
    b = dw.zero_bias if bias is None else bias
    y = np.empty((n, dw.out_channels, *out_hw), np.float32)
    for i in range(n):
        _phase_planes(x[i], xf, sh, sw, top, left, hq, wq)
        _tiles(yb.reshape(-1), dw.packed, xf, xoff, yb.shape[0] // OB, qpad, nr)
        _extract(yb, y[i], b, wq, act, p0, p1)
    return y


def pointwise_vectors(positions: int) -> int:
    """The cheapest tile width (``TILE_COST``) that divides ``positions`` into whole tiles, or 0."""
    fits = [nr for nr in range(1, NR_MAX + 1) if positions % (VEC * nr) == 0]
    return min(fits, key=lambda nr: TILE_COST[nr - 1]) if fits else 0


def pointwise_conv2d(x: NDArray[np.float32], dw: DirectWeights, bias: NDArray[np.float32] | None,
                     act: int = 0, p0: float = 0.0, p1: float = 0.0) -> NDArray[np.float32] | None:
    """A 1x1, stride-1, unpadded conv with no copies: the tiles read x's channel planes in place and
    write the output's in place, then the bias and activation run over it. Returns None where that
    does not fit (H*W not whole tiles, or Cout not a multiple of ``OB``): the caller's sgemm runs.

    Against OpenBLAS's sgemm + the epilogue (1 thread, this host): 32 -> 32 @80 0.155 vs 0.204 ms,
    64 -> 64 @40 0.106 vs 0.129, 192 -> 128 @20 0.121 vs 0.136 (docs/dense_kernels.md)."""
    n, cin, hgt, wid = x.shape
    q = hgt * wid
    nr = pointwise_vectors(q)
    if nr == 0 or dw.out_channels % OB:
        return None
    key = ("1x1", q)
    xoff = dw.geometry.get(key)
    if xoff is None:
        xoff = dw.geometry[key] = np.arange(cin, dtype=np.int64) * q
    y = np.empty((n, dw.out_channels, hgt, wid), np.float32)
    b = dw.zero_bias if bias is None else bias
    for i in range(n):
        yi = y[i].reshape(dw.out_channels, q)
        _tiles(yi.reshape(-1), dw.packed, x[i].reshape(-1), xoff, dw.out_channels // OB, q, nr)
        bias_act_rows(yi, b, act, p0, p1)
    return y
