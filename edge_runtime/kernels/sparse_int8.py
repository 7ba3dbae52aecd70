"""Zero-skipping int8 GEMV / token-batched MatMul (incl. 1x1 conv): inputs equal to their zero point are skipped.

Public API::

    prepare_int8_weights(W_kn) -> PreparedInt8                  # once: int8 (K, N), padded to 16
    requant_params(x_scale, w_scale, y_scale, y_zp, n, bias_int32, relu, out_dtype) -> Requant
    sparse_gemv_int8(x, x_zp, prepared, requant=None) -> (N,) int32 accumulators or uint8/int8
    sparse_matmul_int8(X, x_zp, prepared, requant=None) -> (M, N) likewise

Semantics (onnxruntime's QLinearMatMul/QGemm with symmetric weights): ``acc[n] = sum_k
(x[k] - x_zp) * W[k, n]`` in int32, then, when ``requant`` is given, ``y = saturate(rint(
float32(acc + bias) * multiplier[n]) + y_zp)`` (round half to even), clamped below at
``y_zp`` with a fused ReLU. Weight zero points must be 0 (onnxruntime's default
symmetric int8 weights); use the dense ops otherwise.

How: x is scanned once, compacting the indices and centred values of the entries that
differ from the zero point (after a ReLU, an int8/uint8 activation equals its zero point
exactly where the float activation is 0). Each active input then adds one int8 weight row
(N bytes, a quarter of the fp32 row) to int32 accumulators held in blocks of ``IBLOCK``
outputs: the widening multiply-add ``acc += int32(v) * int32(w)`` that LLVM vectorises to
sign-extend + multiply + add on every target (NEON, AVX2, AVX-512), the portable path
the Cortex-A72 (no dot-product instructions) needs. Cost ~ nnz(x) * N.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels.int8_epilogue import affine_lookup, requantize_into
from edge_runtime.kernels.simd import cttz
from edge_runtime.kernels.sparse_common import aligned_empty
from edge_runtime.kernels.simd_int8 import (HAS_DOTPROD, HAS_VNNI, VEC, dot_rows, dot_taps, mac_rows, mac_taps,
                                            ne_mask64, udot_rows, udot_taps)

__all__ = ["PreparedInt8", "Requant", "prepare_int8_weights", "requant_params", "sparse_gemv_int8",
           "sparse_matmul_int8", "IBLOCK"]

#: Outputs per accumulator block (int32): 128 = 8 of the 32 zmm registers with AVX-512 VNNI, else
#: 64 = 4 zmm / 8 ymm / 16 NEON q registers.
IBLOCK = 128 if HAS_VNNI else 64
#: Which multiply-add the kernels use on this host (recorded by the benchmarks).
CODE_PATH = ("AVX-512 VNNI vpdpbusd (quads of active inputs) + widening multiply-add" if HAS_VNNI
             else "aarch64 dotprod udot (quads of active inputs, weights ^ 0x80) + widening multiply-add"
             if HAS_DOTPROD else "portable widening multiply-add (<16 x i32>)")
_NBLOCK_VEC = IBLOCK // VEC
#: Active inputs per sweep of the GEMV over all output blocks (the fp32 GEMV's GEMV_GROUP idea).
GEMV_GROUP = 32
_I8 = (np.dtype(np.int8), np.dtype(np.uint8))


@dataclass(frozen=True)
class PreparedInt8:
    """int8 weights laid out for the kernels: (K, Np) C-contiguous, Np = N rounded up to 16.

    Example:
        >>> p = prepare_int8_weights(np.ones((4, 3), dtype=np.int8))
        >>> (p.k, p.n, p.w.shape)
        (4, 3, (4, 16))
    """

    w: NDArray[np.int8]
    n: int

    @property
    def k(self) -> int:
        """Number of input features K."""
        return int(self.w.shape[0])


@dataclass(frozen=True)
class Requant:
    """The epilogue: ``saturate(rint(float32(acc + bias) * multiplier) + zero_point)``, optional ReLU.

    Attributes:
        bias: (Np,) int32, zero-padded; added to the int32 sums before the float scale (as MLAS).
        multiplier: (Np,) float32, ``x_scale * w_scale[n] / y_scale``.
        zero_point: the output's zero point.
        relu: clamp at ``zero_point`` (a fused ReLU in the quantized domain).
        unsigned: uint8 output (else int8).
        dtype: the output's numpy dtype.
    """

    bias: NDArray[np.int32]
    multiplier: NDArray[np.float32]
    zero_point: int
    relu: bool
    unsigned: bool
    dtype: np.dtype  # the output's element type: the table's, else uint8 when unsigned, else int8
    table: NDArray | None = None  # (256,) a QuantizedLookup folded into the epilogue: out = table[byte & 255]
    #: The table as arithmetic (int8_epilogue.affine_lookup), when it is a threshold + requantization.
    lookup: NDArray[np.float32] | None = None
    bias_bound: int = 0  # max |bias|: the float32 sums of the dense conv stay exact below 2**24 - K*255*128


def _padded(n: int) -> int:
    return max(16, -(-n // 16) * 16)


def prepare_int8_weights(w_kn: ArrayLike) -> PreparedInt8:
    """Copy a (K, N) int8 weight matrix once into the padded row-major layout the kernels read.

    Raises:
        InvalidArgumentError: not a 2-D int8 matrix.
    """
    w = np.asarray(w_kn)
    if w.ndim != 2 or w.dtype != np.int8:
        raise InvalidArgumentError(f"prepare_int8_weights expects a 2-D (K, N) int8 matrix, got {w.dtype} "
                                   f"{w.shape}; quantize the weights to int8 (symmetric, zero point 0) first.")
    k, n = w.shape
    out = aligned_empty((k, _padded(n)), np.int8)  # 64-byte aligned rows (as the fp32 kernels' weights)
    out[:, n:] = 0
    out[:, :n] = w
    return PreparedInt8(w=out, n=int(n))


def requant_params(x_scale: float, w_scale: ArrayLike, y_scale: float, y_zero_point: int, n: int,
                   bias: ArrayLike | None = None, relu: bool = False, out_dtype: object = np.uint8,
                   table: ArrayLike | None = None) -> Requant:
    """Build the epilogue for N outputs (w_scale scalar or per output; bias int32 or None; an optional
    256-entry uint8/int8 ``table`` applied to the requantized bytes, supported by the conv kernels).

    Raises:
        InvalidArgumentError: w_scale/bias length differs from N, or out_dtype is not int8/uint8.
    """
    dt = np.dtype(out_dtype)  # type: ignore[call-overload]
    if dt not in _I8:
        raise InvalidArgumentError(f"requant_params: out_dtype {dt} is not supported; expected uint8 or int8.")
    ws = np.asarray(w_scale, np.float32).reshape(-1)
    if ws.size not in (1, n):
        raise InvalidArgumentError(f"requant_params: w_scale has {ws.size} values for {n} outputs; expected 1 or {n}.")
    npad = _padded(n)
    mult = np.zeros(npad, np.float32)
    mult[:n] = np.float32(x_scale) * np.broadcast_to(ws, (n,)) / np.float32(y_scale)
    b = np.zeros(npad, np.int32)
    if bias is not None:
        bias = np.asarray(bias, np.int32).reshape(-1)
        if bias.size != n:
            raise InvalidArgumentError(f"requant_params: bias has {bias.size} values for {n} outputs.")
        b[:n] = bias
    bound = int(np.abs(b.astype(np.int64)).max())
    if table is not None:
        table = np.ascontiguousarray(table)
        if table.shape != (256,) or table.dtype not in _I8:
            raise InvalidArgumentError(f"requant_params: table has dtype {table.dtype} and shape {table.shape}; "
                                       f"expected (256,) uint8 or int8 (a QuantizedLookup's table).")
        return Requant(b, mult, int(y_zero_point), bool(relu), dt == np.uint8, table.dtype, table,
                       affine_lookup(table, dt), bound)
    return Requant(b, mult, int(y_zero_point), bool(relu), dt == np.uint8, dt, bias_bound=bound)


# ----------------------------------------------------------------------------- numba


@numba.njit(cache=True)
def compact_int8(x, zp, vals, idx):  # pragma: no cover - compiled
    """Centred values ``x[k] - zp`` that are nonzero, and their indices.

    Returns:
        (count, all centred values >= 0): the second says whether the VNNI path may run.
    """
    c, lo = compact_append(x, zp, vals, idx, 0, 0)
    return c, lo >= 0


@numba.njit(cache=True)
def compact_append(x, zp, vals, idx, c, offset):  # pragma: no cover - compiled
    """Append the nonzero ``x[k] - zp`` at ``vals[c:]``, indices ``k + offset``; returns (new c, min value).

    64 bytes at a time: one vector compare gives a 64-bit mask of the active inputs
    (:func:`edge_runtime.kernels.simd_int8.ne_mask64`), and only its set bits are visited,
    lowest first, so 64 inactive inputs cost a load and a compare, and the loop's
    data-dependent exit mispredicts once per 64 inputs rather than once per 8 (the SWAR
    version on 8-byte words took 1.2 ns per input at 90% sparsity).
    """
    n = x.shape[0]
    n64 = n - n % 64
    lo = 0
    for q in range(0, n64, 64):
        m = ne_mask64(x, q, zp)
        while m != 0:
            k = q + cttz(m)
            v = np.int32(x[k]) - zp
            vals[c] = v
            idx[c] = k + offset
            c += 1
            lo = min(lo, v)
            m &= m - 1
    for k in range(n64, n):
        v = np.int32(x[k]) - zp
        vals[c] = v
        idx[c] = k + offset
        c += v != 0
        lo = min(lo, v)
    return c, lo


def _accumulate(row_fn):
    """accumulate(acc, w, vals, idx, i0, i1, base) over IBLOCK-output register blocks of ``row_fn``."""

    @numba.njit(cache=True)
    def accumulate(acc, w, vals, idx, i0, i1, base):  # pragma: no cover - compiled
        t = acc.shape[0]
        nb = t - t % IBLOCK
        for n0 in range(0, nb, IBLOCK):
            row_fn(acc, w, vals, idx, i0, i1, base, n0, _NBLOCK_VEC)
        rem = (t - nb) // VEC
        if rem >= 4:
            row_fn(acc, w, vals, idx, i0, i1, base, nb, 4)
            nb += 4 * VEC
            rem -= 4
        if rem == 1:
            row_fn(acc, w, vals, idx, i0, i1, base, nb, 1)
        elif rem == 2:
            row_fn(acc, w, vals, idx, i0, i1, base, nb, 2)
        elif rem == 3:
            row_fn(acc, w, vals, idx, i0, i1, base, nb, 3)

    return accumulate


#: acc[:] += sum_{i0<=i<i1} vals[i] * int32(w[idx[i] + base, :]) (len(acc) a multiple of 16), any vals.
accumulate_mac = _accumulate(mac_rows)
#: The same for vals in [0, 255]: AVX-512 VNNI or aarch64 udot quads where the host has them.
accumulate_u8 = (_accumulate(dot_rows) if HAS_VNNI else _accumulate(udot_rows) if HAS_DOTPROD
                 else accumulate_mac)




def _accumulate_taps(taps_fn):
    """accumulate_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps) over IBLOCK-output blocks."""

    @numba.njit(cache=True)
    def accumulate_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps):  # pragma: no cover - compiled
        t = acc.shape[0]
        nb = t - t % IBLOCK
        for n0 in range(0, nb, IBLOCK):
            taps_fn(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, _NBLOCK_VEC)
        rem = (t - nb) // VEC
        if rem >= 4:
            taps_fn(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 4)
            nb += 4 * VEC
            rem -= 4
        if rem == 1:
            taps_fn(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 1)
        elif rem == 2:
            taps_fn(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 2)
        elif rem == 3:
            taps_fn(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 3)

    return accumulate_taps


#: Runs t < ntaps of a packed CSR list (entries ptr[tlo[t]] .. ptr[thi[t]], weight rows idx + tbase[t]).
accumulate_taps_mac = _accumulate_taps(mac_taps)
#: The same for values in [0, 255] (AVX-512 VNNI or aarch64 udot where the host has it).
accumulate_taps_u8 = (_accumulate_taps(dot_taps) if HAS_VNNI else _accumulate_taps(udot_taps) if HAS_DOTPROD
                      else accumulate_taps_mac)


@numba.njit(cache=True)
def accumulate_int8(acc, w, vals, idx, i0, i1, base, unsigned_vals):  # pragma: no cover - compiled
    """:data:`accumulate_u8` when ``unsigned_vals`` (every value in [0, 255]), else :data:`accumulate_mac`."""
    if unsigned_vals:
        accumulate_u8(acc, w, vals, idx, i0, i1, base)
    else:
        accumulate_mac(acc, w, vals, idx, i0, i1, base)


@numba.njit(cache=True)
def _gemv(x, zp, w):  # pragma: no cover - compiled
    vals = np.empty(x.shape[0], np.int32)
    idx = np.empty(x.shape[0], np.int32)
    c, u8 = compact_int8(x, zp, vals, idx)
    acc = np.zeros(w.shape[1], np.int32)
    for g in range(0, c, GEMV_GROUP):  # a group's rows are read whole, start to end: the prefetcher streams them
        accumulate_int8(acc, w, vals, idx, g, min(g + GEMV_GROUP, c), 0, u8)
    return acc


@numba.njit(cache=True)
def _gemv_requant(x, zp, w, out, bias, mult, yzp, relu, unsigned):  # pragma: no cover - compiled
    requantize_into(out, _gemv(x, zp, w), bias, mult, yzp, relu, unsigned)


@numba.njit(cache=True)
def _matmul(x, zp, w, n):  # pragma: no cover - compiled
    out = np.empty((x.shape[0], n), np.int32)
    vals = np.empty(x.shape[1], np.int32)
    idx = np.empty(x.shape[1], np.int32)
    acc = np.empty(w.shape[1], np.int32)
    for r in range(x.shape[0]):
        c, u8 = compact_int8(x[r], zp, vals, idx)
        acc[:] = 0
        accumulate_int8(acc, w, vals, idx, 0, c, 0, u8)
        out[r, :] = acc[:n]
    return out


@numba.njit(cache=True)
def _matmul_requant(x, zp, w, out, bias, mult, yzp, relu, unsigned):  # pragma: no cover - compiled
    vals = np.empty(x.shape[1], np.int32)
    idx = np.empty(x.shape[1], np.int32)
    acc = np.empty(w.shape[1], np.int32)
    for r in range(x.shape[0]):
        c, u8 = compact_int8(x[r], zp, vals, idx)
        acc[:] = 0
        accumulate_int8(acc, w, vals, idx, 0, c, 0, u8)
        requantize_into(out[r], acc, bias, mult, yzp, relu, unsigned)


# ----------------------------------------------------------------------------- wrappers


_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def check_int8_input(x: NDArray, zp: int, k: int, ndim: int, who: str) -> NDArray:
    """x as a C-contiguous int8/uint8 array of rank ``ndim`` whose last axis is K.

    Raises:
        InvalidInputError: wrong dtype, rank, K or a zero point outside x's range.
    """
    lo_hi = _RANGE.get(x.dtype)
    if lo_hi is None or x.ndim != ndim or x.shape[-1] != k:
        raise InvalidInputError(f"{who}: x has dtype {x.dtype} and shape {x.shape}; expected int8/uint8 of rank "
                                f"{ndim} with last dimension K={k} (the prepared weights' rows).")
    if not lo_hi[0] <= zp <= lo_hi[1]:
        raise InvalidInputError(f"{who}: zero point {zp} is outside {x.dtype}'s range {list(lo_hi)}.")
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def sparse_gemv_int8(x: NDArray, x_zero_point: int, prepared: PreparedInt8,
                     requant: Requant | None = None) -> NDArray:
    """``(x - x_zp) @ W`` skipping entries equal to ``x_zp``; int32 (N,), or requantized (N,).

    Raises:
        InvalidInputError: x is not int8/uint8 of shape (K,).
    """
    if requant is not None and requant.table is not None:
        raise InvalidArgumentError(f"sparse_gemv_int8: a requant with a lookup table is supported by the conv kernels "
                                   f"only; apply the table to the result (kernels.lookup.lookup_bytes).")
    x = check_int8_input(x, x_zero_point, prepared.k, 1, "sparse_gemv_int8")
    if requant is None:
        return _gemv(x, x_zero_point, prepared.w)[:prepared.n]
    out = np.empty(prepared.n, requant.dtype)
    _gemv_requant(x, x_zero_point, prepared.w, out, requant.bias, requant.multiplier, requant.zero_point,
                  requant.relu, requant.unsigned)
    return out


def sparse_matmul_int8(x: NDArray, x_zero_point: int, prepared: PreparedInt8,
                       requant: Requant | None = None) -> NDArray:
    """Row by row :func:`sparse_gemv_int8` of (M, K) x: (M, N) int32 or requantized.

    A 1x1 convolution is this with the input's pixels as rows: ``x.reshape(C, H*W).T``.

    Raises:
        InvalidInputError: x is not int8/uint8 of shape (M, K).
    """
    if requant is not None and requant.table is not None:
        raise InvalidArgumentError(f"sparse_matmul_int8: a requant with a lookup table is supported by the conv kernels "
                                   f"only; apply the table to the result (kernels.lookup.lookup_bytes).")
    x = check_int8_input(x, x_zero_point, prepared.k, 2, "sparse_matmul_int8")
    if requant is None:
        return _matmul(x, x_zero_point, prepared.w, prepared.n)
    out = np.empty((x.shape[0], prepared.n), requant.dtype)
    _matmul_requant(x, x_zero_point, prepared.w, out, requant.bias, requant.multiplier, requant.zero_point,
                    requant.relu, requant.unsigned)
    return out
