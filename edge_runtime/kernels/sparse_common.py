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

import threading

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = [
    "BLOCK", "VEC", "HAS_AVX512", "axpy_rows", "axpy_taps", "compress16", "nonzero_mask16", "cttz", "popcount",
    "accumulate", "accumulate_taps", "compact", "compact_bits", "compact_pixels", "activate",
    "aligned_empty", "workspace",
]

#: Floats per explicit vector (one zmm, two ymm, four NEON q registers).
VEC = 16


def _host_avx512() -> bool:
    """True where LLVM reports AVX-512F on this CPU."""
    try:
        return bool(llvm_binding.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # pragma: no cover - hosts where LLVM cannot read features
        return False


#: The host has AVX-512: 32 zmm registers and a vector compress instruction.
HAS_AVX512 = _host_avx512()
#: Register block of :func:`axpy_rows` on this host, a multiple of ``VEC``: 128 floats
#: with AVX-512, else 64.
BLOCK = 128 if HAS_AVX512 else 64
_NBLOCK_VEC = BLOCK // VEC


def _check_array(name, ty, nd, dt):
    if not (isinstance(ty, types.Array) and ty.ndim == nd and ty.dtype == dt and ty.layout == "C"):
        raise TypingError(f"{name} must be a C-contiguous {nd}-D {dt} array, got {ty}")


class _FmaRows:
    """IR emitter for the register-blocked ``acc += v * w[k, col : col + 16*nv]`` body.

    ``load()`` copies ``acc[col : col + 16*nv]`` into ``nv`` vector registers (allocas that
    LLVM promotes), ``row(k, v)`` adds one weight row, ``store()`` writes them back.
    """

    def __init__(self, context, builder, w_ty, w_val, acc_ty, acc_val, col, nv):
        self.builder = builder
        acc_a = context.make_array(acc_ty)(context, builder, acc_val)
        w_a = context.make_array(w_ty)(context, builder, w_val)
        self.i64 = ir.IntType(64)
        self.vty = ir.VectorType(ir.FloatType(), VEC)
        self.vptr = self.vty.as_pointer()
        self.col = col
        self.accp = builder.gep(acc_a.data, [col])
        self.regs = [cgutils.alloca_once(builder, self.vty) for _ in range(nv)]
        self.wbytes = builder.bitcast(w_a.data, ir.IntType(8).as_pointer())
        self.wptr_ty = w_a.data.type
        self.rowstride = builder.extract_value(w_a.strides, 0)
        self.fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.vty, [self.vty] * 3), f"llvm.fma.v{VEC}f32")

    def _acc_slot(self, j):
        return self.builder.bitcast(self.builder.gep(self.accp, [ir.Constant(self.i64, VEC * j)]), self.vptr)

    def load(self):
        for j, reg in enumerate(self.regs):
            self.builder.store(self.builder.load(self._acc_slot(j), align=4), reg)

    def store(self):
        for j, reg in enumerate(self.regs):
            self.builder.store(self.builder.load(reg), self._acc_slot(j), align=4)

    def row(self, k, v):
        b = self.builder
        lane0 = ir.Constant(ir.IntType(32), 0)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), VEC), None)
        vs = b.shuffle_vector(b.insert_element(ir.Constant(self.vty, None), v, lane0),
                              ir.Constant(self.vty, None), splat)
        row = b.bitcast(b.gep(self.wbytes, [b.mul(k, self.rowstride)]), self.wptr_ty)
        row = b.gep(row, [self.col])
        for j, reg in enumerate(self.regs):
            p = b.bitcast(b.gep(row, [ir.Constant(self.i64, VEC * j)]), self.vptr)
            b.store(b.call(self.fma, [vs, b.load(p, align=4), b.load(reg)]), reg)


def _literal_nvec(nvec, who):
    if not isinstance(nvec, types.IntegerLiteral):
        raise TypingError(f"{who}: nvec must be a literal int, got {nvec}")
    return int(nvec.literal_value)


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
        _check_array(f"axpy_rows: {name}", ty, nd, dt)
    nv = _literal_nvec(nvec, "axpy_rows")
    sig = types.void(acc, w, vals, idx, i0, i1, base, n0, nvec)

    def codegen(context, builder, signature, args):
        vals_a = context.make_array(signature.args[2])(context, builder, args[2])
        idx_a = context.make_array(signature.args[3])(context, builder, args[3])
        i64 = ir.IntType(64)
        start, stop, off, col = (context.cast(builder, args[j], signature.args[j], types.int64)
                                 for j in (4, 5, 6, 7))
        em = _FmaRows(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        with cgutils.for_range_slice(builder, start, stop, ir.Constant(i64, 1), intp=i64) as (i, _):
            k = builder.add(builder.sext(builder.load(builder.gep(idx_a.data, [i])), i64), off)
            em.row(k, builder.load(builder.gep(vals_a.data, [i])))
        em.store()
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def axpy_taps(typingctx, acc, w, vals, idx, cnt, tpix, tbase, ntaps, n0, nvec):
    """Multi-list :func:`axpy_rows` for convolutions, with ``acc`` in registers throughout.

    For t < ntaps, p = tpix[t]: acc[n0 : n0+16*nvec] += sum_{i < cnt[p]} vals[p, i] *
    w[idx[p, i] + tbase[t], n0 : n0+16*nvec]. ``vals`` (P, C) float32 / ``idx`` (P, C)
    int32 hold each input pixel's nonzero channels (from :func:`compact_pixels`), ``cnt``
    (P,) int64 their counts, ``tpix``/``tbase`` (>= ntaps,) int64 the pixel and weight-row
    offset of every valid kernel tap. Same contract as :func:`axpy_rows` otherwise; this
    replaces copying the taps' lists into one list first (that copy cost ~3 ns per entry).
    """
    for name, ty, nd, dt in (("acc", acc, 1, types.float32), ("w", w, 2, types.float32),
                             ("vals", vals, 2, types.float32), ("idx", idx, 2, types.int32),
                             ("cnt", cnt, 1, types.int64), ("tpix", tpix, 1, types.int64),
                             ("tbase", tbase, 1, types.int64)):
        _check_array(f"axpy_taps: {name}", ty, nd, dt)
    nv = _literal_nvec(nvec, "axpy_taps")
    sig = types.void(acc, w, vals, idx, cnt, tpix, tbase, ntaps, n0, nvec)

    def codegen(context, builder, signature, args):
        arrs = [context.make_array(signature.args[j])(context, builder, args[j]) for j in range(2, 7)]
        vals_a, idx_a, cnt_a, tpix_a, tbase_a = arrs
        i64 = ir.IntType(64)
        nt = context.cast(builder, args[7], signature.args[7], types.int64)
        col = context.cast(builder, args[8], signature.args[8], types.int64)
        vstride = builder.extract_value(vals_a.strides, 0)
        istride = builder.extract_value(idx_a.strides, 0)
        vbytes = builder.bitcast(vals_a.data, ir.IntType(8).as_pointer())
        ibytes = builder.bitcast(idx_a.data, ir.IntType(8).as_pointer())
        em = _FmaRows(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        one = ir.Constant(i64, 1)
        with cgutils.for_range_slice(builder, ir.Constant(i64, 0), nt, one, intp=i64) as (t, _):
            p = builder.load(builder.gep(tpix_a.data, [t]))
            base = builder.load(builder.gep(tbase_a.data, [t]))
            n = builder.load(builder.gep(cnt_a.data, [p]))
            vrow = builder.bitcast(builder.gep(vbytes, [builder.mul(p, vstride)]), vals_a.data.type)
            irow = builder.bitcast(builder.gep(ibytes, [builder.mul(p, istride)]), idx_a.data.type)
            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), n, one, intp=i64) as (i, _):
                k = builder.add(builder.sext(builder.load(builder.gep(irow, [i])), i64), base)
                em.row(k, builder.load(builder.gep(vrow, [i])))
        em.store()
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def compress16(typingctx, x, k0, vals, idx, c):
    """Append the nonzeros of x[k0 : k0+16] (and their indices) at vals[c:], idx[c:].

    Returns the new count. One AVX-512 ``vcompressps`` per array (``llvm.masked.
    compressstore``); NaN counts as nonzero. Only used where the host has AVX-512 (other
    targets lower the intrinsic lane by lane, slower than :func:`compact_bits`).
    """
    for name, ty, dt in (("x", x, types.float32), ("vals", vals, types.float32), ("idx", idx, types.int32)):
        _check_array(f"compress16: {name}", ty, 1, dt)
    sig = types.int64(x, k0, vals, idx, c)

    def codegen(context, builder, signature, args):
        xa, va, ia = (context.make_array(signature.args[j])(context, builder, args[j]) for j in (0, 2, 3))
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        k0v = context.cast(builder, args[1], signature.args[1], types.int64)
        cv = context.cast(builder, args[4], signature.args[4], types.int64)
        fty = ir.VectorType(ir.FloatType(), VEC)
        ity = ir.VectorType(i32, VEC)
        mty = ir.VectorType(ir.IntType(1), VEC)
        v = builder.load(builder.bitcast(builder.gep(xa.data, [k0v]), fty.as_pointer()), align=4)
        mask = builder.fcmp_unordered("!=", v, ir.Constant(fty, None))
        kvec = builder.shuffle_vector(
            builder.insert_element(ir.Constant(ity, None), builder.trunc(k0v, i32), ir.Constant(i32, 0)),
            ir.Constant(ity, None), ir.Constant(ity, None))
        iota = builder.add(kvec, ir.Constant(ity, list(range(VEC))))
        for vec, arr, ty, name in ((v, va, fty, "v16f32"), (iota, ia, ity, "v16i32")):
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [ty, arr.data.type, mty]),
                f"llvm.masked.compressstore.{name}")
            builder.call(fn, [vec, builder.gep(arr.data, [cv]), mask])
        i16 = ir.IntType(16)
        pop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16, [i16]), "llvm.ctpop.i16")
        return builder.add(cv, builder.zext(builder.call(pop, [builder.bitcast(mask, i16)]), i64))

    return sig, codegen


@intrinsic
def nonzero_mask16(typingctx, x, k0):
    """Bit j of the result is set where x[k0 + j] != 0 (NaN counts as nonzero), j < 16.

    One vector compare and a mask move; portable (NEON builds the mask in a few shuffles).
    """
    _check_array("nonzero_mask16: x", x, 1, types.float32)
    sig = types.int64(x, k0)

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        k0v = context.cast(builder, args[1], signature.args[1], types.int64)
        fty = ir.VectorType(ir.FloatType(), VEC)
        v = builder.load(builder.bitcast(builder.gep(xa.data, [k0v]), fty.as_pointer()), align=4)
        mask = builder.fcmp_unordered("!=", v, ir.Constant(fty, None))
        return builder.zext(builder.bitcast(mask, ir.IntType(16)), ir.IntType(64))

    return sig, codegen


@intrinsic
def cttz(typingctx, m):
    """Index of the lowest set bit of a nonzero int64 (``llvm.cttz``)."""
    sig = types.int64(m)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [v, ir.Constant(ir.IntType(1), 1)])

    return sig, codegen


@intrinsic
def popcount(typingctx, m):
    """Number of set bits of an int64 (``llvm.ctpop``)."""
    sig = types.int64(m)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64]), "llvm.ctpop.i64")
        return builder.call(fn, [v])

    return sig, codegen


@numba.njit(cache=True, fastmath=True)
def accumulate(acc, w, vals, idx, i0, i1, base):  # pragma: no cover - compiled
    """acc[:] += sum_{i0<=i<i1} vals[i] * w[idx[i] + base, :]; len(acc) a multiple of VEC.

    Register blocks of ``BLOCK`` floats, then one pass over the list for the remaining
    vectors (a 64-float tile is one pass of 4 registers, not 4 passes of 1).
    """
    t = acc.shape[0]
    nb = t - t % BLOCK
    for n0 in range(0, nb, BLOCK):
        axpy_rows(acc, w, vals, idx, i0, i1, base, n0, _NBLOCK_VEC)
    rem = (t - nb) // VEC
    if rem == 1:
        axpy_rows(acc, w, vals, idx, i0, i1, base, nb, 1)
    elif rem == 2:
        axpy_rows(acc, w, vals, idx, i0, i1, base, nb, 2)
    elif rem == 3:
        axpy_rows(acc, w, vals, idx, i0, i1, base, nb, 3)
    elif rem >= 4:
        axpy_rows(acc, w, vals, idx, i0, i1, base, nb, 4)
        for n0 in range(nb + 4 * VEC, t, VEC):
            axpy_rows(acc, w, vals, idx, i0, i1, base, n0, 1)


@numba.njit(cache=True, fastmath=True)
def accumulate_taps(acc, w, vals, idx, cnt, tpix, tbase, ntaps):  # pragma: no cover - compiled
    """:func:`accumulate` over the nonzero lists of several input pixels (:func:`axpy_taps`)."""
    t = acc.shape[0]
    nb = t - t % BLOCK
    for n0 in range(0, nb, BLOCK):
        axpy_taps(acc, w, vals, idx, cnt, tpix, tbase, ntaps, n0, _NBLOCK_VEC)
    rem = (t - nb) // VEC
    if rem == 1:
        axpy_taps(acc, w, vals, idx, cnt, tpix, tbase, ntaps, nb, 1)
    elif rem == 2:
        axpy_taps(acc, w, vals, idx, cnt, tpix, tbase, ntaps, nb, 2)
    elif rem == 3:
        axpy_taps(acc, w, vals, idx, cnt, tpix, tbase, ntaps, nb, 3)
    elif rem >= 4:
        axpy_taps(acc, w, vals, idx, cnt, tpix, tbase, ntaps, nb, 4)
        for n0 in range(nb + 4 * VEC, t, VEC):
            axpy_taps(acc, w, vals, idx, cnt, tpix, tbase, ntaps, n0, 1)


@numba.njit(cache=True, fastmath=True)
def compact(x, vals, idx):  # pragma: no cover - compiled
    """Write the nonzeros of 1-D ``x`` to ``vals``/``idx``; return their count.

    16 at a time: with :func:`compress16` on AVX-512 hosts, elsewhere by walking the set
    bits of :func:`nonzero_mask16` (both 4-5x faster at 90% sparsity than the branch-free
    scalar pass they replace, 0.85 ns per element on the build machine).
    """
    if HAS_AVX512:
        return _compact_avx512(x, vals, idx)
    return compact_bits(x, vals, idx)


@numba.njit(cache=True, fastmath=True)
def _compact_avx512(x, vals, idx):  # pragma: no cover - compiled
    n = x.shape[0]
    nb = n - n % VEC
    c = 0
    for k0 in range(0, nb, VEC):
        c = compress16(x, k0, vals, idx, c)
    return _compact_tail(x, vals, idx, nb, c)


@numba.njit(cache=True, fastmath=True)
def _compact_tail(x, vals, idx, start, c):  # pragma: no cover - compiled
    for k in range(start, x.shape[0]):
        v = x[k]
        vals[c] = v
        idx[c] = k
        c += v != 0
    return c


@numba.njit(cache=True, fastmath=True)
def compact_bits(x, vals, idx):  # pragma: no cover - compiled
    """:func:`compact` without AVX-512: walk the set bits of 16-element masks."""
    n = x.shape[0]
    nb = n - n % VEC
    c = 0
    for k0 in range(0, nb, VEC):
        m = nonzero_mask16(x, k0)
        while m != 0:
            k = k0 + cttz(m)
            vals[c] = x[k]
            idx[c] = k
            c += 1
            m &= m - 1
    return _compact_tail(x, vals, idx, nb, c)


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

    Reads each channel plane once, 16 pixels per :func:`nonzero_mask16`, and appends only
    the set bits to their pixels' lists (channels ascending). Cost ~ C*H*W/16 masks +
    nnz appends: 7x faster at 90% sparsity (30 vs 210 us for 128x28x28) than transposing
    16 pixels into a scratch and compacting each pixel's row.
    """
    nc, hw = xc.shape
    nb = hw - hw % VEC
    for p in range(hw):
        cnt[p] = 0
    for c in range(nc):
        plane = xc[c]
        for p0 in range(0, nb, VEC):
            m = nonzero_mask16(plane, p0)
            while m != 0:
                p = p0 + cttz(m)
                j = cnt[p]
                vals[p, j] = plane[p]
                idx[p, j] = c
                cnt[p] = j + 1
                m &= m - 1
        for p in range(nb, hw):
            v = plane[p]
            if v != 0:
                j = cnt[p]
                vals[p, j] = v
                idx[p, j] = c
                cnt[p] = j + 1


def aligned_empty(shape: tuple[int, ...] | int, dtype=np.float32) -> np.ndarray:
    """A C-contiguous uninitialised array whose data starts on a 64-byte boundary.

    numpy aligns large arrays to 16 bytes only; 64-byte vector loads of weight rows that
    straddle two cache lines made the sparse kernels 10-20% slower.
    """
    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    buf = np.empty(nbytes + 64, dtype=np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + nbytes].view(dt).reshape(shape)


_WORKSPACE = threading.local()


def workspace(name: str, size: int, dtype=np.float32) -> np.ndarray:
    """A per-thread reusable 1-D scratch buffer of at least ``size`` elements.

    The kernels' compacted lists and accumulators are large (up to M*K entries); one
    buffer per name and thread is kept and grown as needed instead of a fresh one per
    call. A thread's buffers are never shared, so concurrent ``run`` calls stay safe.
    """
    cache = getattr(_WORKSPACE, "buffers", None)
    if cache is None:
        cache = _WORKSPACE.buffers = {}
    dt = np.dtype(dtype)
    buf = cache.get(name)
    if buf is None or buf.shape[0] < size or buf.dtype != dt:
        buf = aligned_empty(max(int(size), 1), dt)
        cache[name] = buf
    return buf[:size]
