"""Shared numba helpers of the zero-skipping kernels (sparse_matmul, sparse_conv).

The hot loop of every sparse kernel is ``acc[n0:n0+B] += sum_i vals[i] * w[idx[i] + base,
n0:n0+B]`` over one input row's nonzeros. :func:`axpy_rows` emits it as LLVM IR with
explicit ``<16 x float>`` vectors: the B accumulator floats live in registers for the
whole list (one load and one store of ``acc`` per call, not per pass of rows), each
nonzero costs B/16 vector loads and FMAs, and there is no runtime alias check. Written
with plain numba loops LLVM kept ``acc`` in memory, emitted 256-bit code (it prefers
256-bit vectors on AVX-512 CPUs) and one dependency chain per vector.

Explicit vector types are portable: LLVM splits a ``<16 x float>`` into 2 AVX2 or 4 NEON
registers, so the same source compiles everywhere; only the register block ``BLOCK``
(floats kept in registers per call) is chosen for the host: 128 with AVX-512 (8 of its
32 zmm registers), 64 otherwise (8 of 16 ymm on AVX2, 16 of 32 NEON q registers).
numba's on-disk cache (``cache=True``) keys each entry by CPU name and features, so a
cache written on one machine is not loaded on another with different vector units.
"""
from __future__ import annotations

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["BLOCK", "VEC", "axpy_rows", "accumulate", "compact", "compact_pixels", "activate"]

#: Floats per explicit vector (one zmm, two ymm, four NEON q registers).
VEC = 16


def _host_block() -> int:
    """Accumulator floats kept in registers per call: 128 with AVX-512, else 64."""
    try:
        feats = llvm_binding.get_host_cpu_features()
        return 128 if feats.get("avx512f", False) else 64
    except RuntimeError:  # pragma: no cover - hosts where LLVM cannot read features
        return 64


#: Register block of :func:`axpy_rows` on this host, a multiple of ``VEC``.
BLOCK = _host_block()
_NBLOCK_VEC = BLOCK // VEC


@intrinsic
def axpy_rows(typingctx, acc, w, vals, idx, i0, i1, base, n0, nvec):
    """acc[n0 : n0+16*nvec] += sum_{i0 <= i < i1} vals[i] * w[idx[i] + base, n0 : n0+16*nvec].

    ``acc`` 1-D and ``w`` 2-D float32 C-contiguous (rows contiguous), ``vals`` float32 /
    ``idx`` int32 1-D C-contiguous; ``nvec`` must be a compile-time constant. No bounds
    checks: callers guarantee ``idx[i] + base < w.shape[0]`` and ``n0 + 16*nvec <=``
    both row lengths.
    """
    for name, ty, nd, dt in (("acc", acc, 1, types.float32), ("w", w, 2, types.float32),
                             ("vals", vals, 1, types.float32), ("idx", idx, 1, types.int32)):
        if not (isinstance(ty, types.Array) and ty.ndim == nd and ty.dtype == dt and ty.layout == "C"):
            raise TypingError(f"axpy_rows: {name} must be a C-contiguous {nd}-D {dt} array, got {ty}")
    if not isinstance(nvec, types.IntegerLiteral):
        raise TypingError(f"axpy_rows: nvec must be a literal int, got {nvec}")
    nv = int(nvec.literal_value)
    sig = types.void(acc, w, vals, idx, i0, i1, base, n0, nvec)

    def codegen(context, builder, signature, args):
        acc_a = context.make_array(signature.args[0])(context, builder, args[0])
        w_a = context.make_array(signature.args[1])(context, builder, args[1])
        vals_a = context.make_array(signature.args[2])(context, builder, args[2])
        idx_a = context.make_array(signature.args[3])(context, builder, args[3])
        i64 = ir.IntType(64)
        start, stop, off, col = (context.cast(builder, args[j], signature.args[j], types.int64)
                                 for j in (4, 5, 6, 7))
        vty = ir.VectorType(ir.FloatType(), VEC)
        vptr = vty.as_pointer()
        accp = builder.gep(acc_a.data, [col])
        regs = [cgutils.alloca_once(builder, vty) for _ in range(nv)]
        for j, reg in enumerate(regs):
            p = builder.bitcast(builder.gep(accp, [ir.Constant(i64, VEC * j)]), vptr)
            builder.store(builder.load(p, align=4), reg)
        wbytes = builder.bitcast(w_a.data, ir.IntType(8).as_pointer())
        rowstride = builder.extract_value(w_a.strides, 0)
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), VEC), None)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                             f"llvm.fma.v{VEC}f32")
        with cgutils.for_range_slice(builder, start, stop, ir.Constant(i64, 1), intp=i64) as (i, _):
            k = builder.add(builder.sext(builder.load(builder.gep(idx_a.data, [i])), i64), off)
            v = builder.load(builder.gep(vals_a.data, [i]))
            lane0 = ir.Constant(ir.IntType(32), 0)
            vs = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, None), v, lane0),
                                        ir.Constant(vty, None), zeros)
            row = builder.bitcast(builder.gep(wbytes, [builder.mul(k, rowstride)]), w_a.data.type)
            row = builder.gep(row, [col])
            for j, reg in enumerate(regs):
                p = builder.bitcast(builder.gep(row, [ir.Constant(i64, VEC * j)]), vptr)
                builder.store(builder.call(fma, [vs, builder.load(p, align=4), builder.load(reg)]), reg)
        for j, reg in enumerate(regs):
            p = builder.bitcast(builder.gep(accp, [ir.Constant(i64, VEC * j)]), vptr)
            builder.store(builder.load(reg), p, align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, fastmath=True)
def accumulate(acc, w, vals, idx, i0, i1, base):  # pragma: no cover - compiled
    """acc[:] += sum_{i0<=i<i1} vals[i] * w[idx[i] + base, :]; len(acc) a multiple of VEC.

    Register blocks of ``BLOCK`` floats, then single vectors for the rest of the row.
    """
    t = acc.shape[0]
    nb = t - t % BLOCK
    for n0 in range(0, nb, BLOCK):
        axpy_rows(acc, w, vals, idx, i0, i1, base, n0, _NBLOCK_VEC)
    for n0 in range(nb, t, VEC):
        axpy_rows(acc, w, vals, idx, i0, i1, base, n0, 1)


@numba.njit(cache=True, fastmath=True)
def compact(x, vals, idx):  # pragma: no cover - compiled
    """Write the nonzeros of 1-D ``x`` to ``vals``/``idx`` (branch-free); return count."""
    c = 0
    for k in range(x.shape[0]):
        v = x[k]
        vals[c] = v
        idx[c] = k
        c += v != 0
    return c


@numba.njit(cache=True, fastmath=True)
def activate(row, act, p0, p1):  # pragma: no cover - compiled
    """Apply fused activation code ``act`` in place to a 1-D float32 array."""
    n = row.shape[0]
    if act == 1:
        for i in range(n):
            row[i] = max(row[i], np.float32(0.0))
    elif act == 2:
        lo = np.float32(p0)
        hi = np.float32(p1)
        for i in range(n):
            row[i] = min(max(row[i], lo), hi)
    elif act == 3:
        a = np.float32(p0)
        for i in range(n):
            v = row[i]
            row[i] = v if v >= 0 else a * v
    elif act == 4:
        t = np.float32(p0)
        for i in range(n):
            v = row[i]
            row[i] = v if v >= t else np.float32(0.0)


@numba.njit(cache=True, fastmath=True)
def compact_pixels(xc, vals, idx, cnt):  # pragma: no cover - compiled
    """xc (C, H*W) -> per pixel p: vals[p, :cnt[p]], idx[p, :cnt[p]] = its nonzero channels.

    Transposes 16 pixels at a time into an L1-resident (16, C) scratch, then compacts
    each pixel's row sequentially (3-4x faster than appending to 16 lists at once).
    """
    nc, hw = xc.shape
    tmp = np.empty((16, nc), dtype=np.float32)
    for p0 in range(0, hw, 16):
        p1 = min(hw, p0 + 16)
        for c in range(nc):
            for p in range(p0, p1):
                tmp[p - p0, c] = xc[c, p]
        for p in range(p0, p1):
            cnt[p] = compact(tmp[p - p0], vals[p], idx[p])
