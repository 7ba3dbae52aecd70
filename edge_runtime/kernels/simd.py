"""LLVM-level building blocks of the zero-skipping kernels, as numba ``@intrinsic`` functions.

Plain numba loops did not give the code these kernels need (register-resident
accumulators, 512-bit vectors on AVX-512, vector compaction), so these functions emit
LLVM IR with explicit ``<16 x float>`` vectors. Explicit vector types are portable: LLVM
splits a ``<16 x float>`` into 2 AVX2 or 4 NEON registers, so the same source compiles
everywhere. They are only callable from numba-compiled code;
:mod:`edge_runtime.kernels.sparse_common` wraps them into the kernels' helpers.

- :func:`axpy_rows` / :func:`axpy_taps`: ``acc[n0 : n0+16*nvec] += sum_i v_i * w[k_i, ...]``
  over one nonzero list / several runs of a conv's packed list, ``acc`` held in registers.
- :func:`compress16`: AVX-512 compress store of the nonzeros of 16 values.
- :func:`nonzero_mask16`, :func:`cttz`, :func:`popcount`: 16-lane nonzero masks and bit ops.
- :func:`transpose16`: a 16x16 float block transposed in registers (the conv's NCHW store);
  :func:`transpose16_bytes` the same, stored as bytes (the int8 conv's NCHW store);
  :func:`transpose16_u8` a 16x16 byte block (the int8 conv's NCHW input as pixel rows).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import config as numba_config
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["VEC", "jit_target_has", "host_has_avx512", "axpy_rows", "axpy_taps", "compress16", "nonzero_mask16", "cttz", "popcount",
           "transpose16", "transpose16_bytes", "transpose16_u8"]

#: Floats per explicit vector (one zmm, two ymm, four NEON q registers).
VEC = 16


def jit_target_has(feature: str, named_cpu: Callable[[str], bool] | None = None) -> bool:
    """True where numba's JIT target has the LLVM feature ``feature`` (``"avx512f"``, ``"dotprod"``).

    That is the host CPU, unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` retarget the JIT (a
    portable cache, or emulating another CPU in tests): a feature list decides by itself; a named
    CPU without one decides through ``named_cpu(name)`` when given (else the host's features).
    Every ISA-specific kernel asks here, so none emits an instruction its target lacks.
    """
    features, name = numba_config.CPU_FEATURES, numba_config.CPU_NAME
    if features is not None:
        return f"+{feature}" in {f.strip() for f in features.split(",")}
    if named_cpu is not None and name is not None and name != "host":
        return named_cpu(name)
    try:
        return bool(llvm_binding.get_host_cpu_features().get(feature, False))
    except RuntimeError:  # pragma: no cover - hosts where LLVM cannot read features
        return False


def host_has_avx512() -> bool:
    """True where numba's JIT target has AVX-512F (:func:`jit_target_has`); a named CPU without a
    feature list counts as AVX-512 only when its name says so (``skylake-avx512``, ``x86-64-v4``;
    other AVX-512 names read as not)."""
    return jit_target_has("avx512f", lambda name: "avx512" in name or name == "x86-64-v4")


_HOST_AVX512 = host_has_avx512()


def check_array(name, ty, nd, dt):
    """Typing-time check that an intrinsic argument is a C-contiguous ``nd``-D array of ``dt``."""
    if not (isinstance(ty, types.Array) and ty.ndim == nd and ty.dtype == dt and ty.layout == "C"):
        raise TypingError(f"{name} must be a C-contiguous {nd}-D {dt} array, got {ty}")


class AccumulatorRows:
    """IR emitter base: ``nv`` vector registers over ``acc[col : col + 16*nv]`` and a list walk.

    ``load()`` copies the accumulator slice into registers (allocas that LLVM promotes),
    ``list_rows`` calls the subclass's ``row(k, v)`` for each entry of one nonzero list, and
    ``store()`` writes the registers back. Subclasses set ``builder``, ``i64``, ``vty``,
    ``accp`` and ``regs`` and emit the per-row arithmetic (fp32 FMA here, int8 widening
    multiply-add in :mod:`edge_runtime.kernels.simd_int8`).
    """

    def _acc_slot(self, j):
        return self.builder.bitcast(self.builder.gep(self.accp, [ir.Constant(self.i64, VEC * j)]),
                                    self.vty.as_pointer())

    def load(self):
        for j, reg in enumerate(self.regs):
            self.builder.store(self.builder.load(self._acc_slot(j), align=4), reg)

    def store(self):
        for j, reg in enumerate(self.regs):
            self.builder.store(self.builder.load(reg), self._acc_slot(j), align=4)

    def list_rows(self, idx_a, vals_a, start, stop, base):
        """``row(idx[i] + base, vals[i])`` for start <= i < stop (one nonzero list)."""
        b = self.builder
        with cgutils.for_range_slice(b, start, stop, ir.Constant(self.i64, 1), intp=self.i64) as (i, _):
            k = b.add(b.sext(b.load(b.gep(idx_a.data, [i])), self.i64), base)
            self.row(k, b.load(b.gep(vals_a.data, [i])))


class _FmaRows(AccumulatorRows):
    """IR emitter for the register-blocked ``acc += v * w[k, col : col + 16*nv]`` body (fp32 FMA)."""

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


def row_list_typing(who, acc, w, vals, idx, i0, i1, base, n0, nvec, acc_dt, w_dt, val_dt):
    """Type checks and signature of a one-list row intrinsic ``(acc, w, vals, idx, i0, i1, base, n0, nvec)``.

    Returns ``(nv, signature)``: the literal register count and ``void(...)``.
    """
    for name, ty, nd, dt in (("acc", acc, 1, acc_dt), ("w", w, 2, w_dt), ("vals", vals, 1, val_dt),
                             ("idx", idx, 1, types.int32)):
        check_array(f"{who}: {name}", ty, nd, dt)
    return _literal_nvec(nvec, who), types.void(acc, w, vals, idx, i0, i1, base, n0, nvec)


def tap_typing(who, args, dtypes, names=("acc", "w", "vals", "idx")):
    """Type checks and signature of a multi-list intrinsic ``(acc, w, a, b, ptr, tlo, thi, tbase, ntaps, n0, nvec)``.

    ``dtypes`` are the element types of ``acc, w, a, b`` (named ``names`` in errors); the CSR
    pointers and tap arrays are int64. Returns ``(nv, signature)`` as :func:`row_list_typing`.
    """
    acc, w, a, b, ptr, tlo, thi, tbase, ntaps, n0, nvec = args
    for name, ty, nd, dt in ((names[0], acc, 1, dtypes[0]), (names[1], w, 2, dtypes[1]), (names[2], a, 1, dtypes[2]),
                             (names[3], b, 1, dtypes[3]), ("ptr", ptr, 1, types.int64), ("tlo", tlo, 1, types.int64),
                             ("thi", thi, 1, types.int64), ("tbase", tbase, 1, types.int64)):
        check_array(f"{who}: {name}", ty, nd, dt)
    return _literal_nvec(nvec, who), types.void(*args)


def row_list_args(context, builder, signature, args):
    """The list operands of a one-list row intrinsic: ``(vals, idx, start, stop, base, col)``."""
    vals_a = context.make_array(signature.args[2])(context, builder, args[2])
    idx_a = context.make_array(signature.args[3])(context, builder, args[3])
    start, stop, off, col = (context.cast(builder, args[j], signature.args[j], types.int64) for j in (4, 5, 6, 7))
    return vals_a, idx_a, start, stop, off, col


def tap_lists(context, builder, signature, args):
    """The operands of a multi-list ("taps") intrinsic ``f(acc, w, a, b, ptr, tlo, thi, tbase, ntaps, n0, nvec)``:
    ``(a, b, runs, col)``, where ``a``/``b`` are the two list arrays (values and indices, or
    their packed forms) and ``runs()`` walks the taps (see :func:`axpy_taps`)."""
    a_a, b_a, ptr_a, tlo_a, thi_a, tbase_a = (
        context.make_array(signature.args[j])(context, builder, args[j]) for j in range(2, 8))
    nt = context.cast(builder, args[8], signature.args[8], types.int64)
    col = context.cast(builder, args[9], signature.args[9], types.int64)

    @contextmanager
    def runs():
        """``with runs() as (base, start, stop):`` emits the loop over taps t < ntaps; the body
        sees tap t's weight-row offset ``tbase[t]`` and its list run ``ptr[tlo[t]]:ptr[thi[t]]``."""
        with cgutils.for_range(builder, nt, intp=ir.IntType(64)) as loop:
            t = loop.index
            base = builder.load(builder.gep(tbase_a.data, [t]))
            start = builder.load(builder.gep(ptr_a.data, [builder.load(builder.gep(tlo_a.data, [t]))]))
            stop = builder.load(builder.gep(ptr_a.data, [builder.load(builder.gep(thi_a.data, [t]))]))
            yield base, start, stop

    return a_a, b_a, runs, col


@intrinsic
def axpy_rows(typingctx, acc, w, vals, idx, i0, i1, base, n0, nvec):
    """acc[n0 : n0+16*nvec] += sum_{i0 <= i < i1} vals[i] * w[idx[i] + base, n0 : n0+16*nvec].

    ``acc`` 1-D and ``w`` 2-D float32 C-contiguous (rows contiguous), ``vals`` float32 /
    ``idx`` int32 1-D C-contiguous; ``nvec`` must be a compile-time constant. No bounds
    checks: callers guarantee ``idx[i] + base < w.shape[0]`` and ``n0 + 16*nvec <=``
    both row lengths.
    """
    nv, sig = row_list_typing("axpy_rows", acc, w, vals, idx, i0, i1, base, n0, nvec,
                              types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        vals_a, idx_a, start, stop, off, col = row_list_args(context, builder, signature, args)
        em = _FmaRows(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        em.list_rows(idx_a, vals_a, start, stop, off)
        em.store()
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def axpy_taps(typingctx, acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, nvec):
    """Multi-list :func:`axpy_rows` for convolutions, with ``acc`` in registers throughout.

    For t < ntaps: acc[n0 : n0+16*nvec] += sum_{ptr[tlo[t]] <= i < ptr[thi[t]]} vals[i] *
    w[idx[i] + tbase[t], n0 : n0+16*nvec]. ``vals`` float32 / ``idx`` int32 (1-D) are the
    input pixels' nonzeros as one CSR list with pixel offsets ``ptr`` (P+1,) int64 (from
    :func:`edge_runtime.kernels.sparse_common.compact_pixels`); a "tap" here is a run of
    consecutive input pixels tlo[t]..thi[t]-1 whose entries share the weight-row offset
    ``tbase[t]`` (a whole kernel row of a conv with unit dilation, see the conv kernel).
    ``tlo``/``thi``/``tbase`` (>= ntaps,) int64. Same contract as :func:`axpy_rows`
    otherwise; this replaces copying the taps' lists into one list first (~3 ns per entry).
    """
    nv, sig = tap_typing("axpy_taps", (acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, nvec),
                         (types.float32, types.float32, types.float32, types.int32))

    def codegen(context, builder, signature, args):
        vals_a, idx_a, runs, col = tap_lists(context, builder, signature, args)
        em = _FmaRows(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        with runs() as (base, start, stop):
            em.list_rows(idx_a, vals_a, start, stop, base)
        em.store()
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def compress16(typingctx, x, k0, vals, idx, c):
    """Append the nonzeros of x[k0 : k0+16] (and their indices) at vals[c:], idx[c:].

    Returns the new count; NaN counts as nonzero. On AVX-512 hosts each array gets one
    register-form ``vcompressps``/``vpcompressd`` and a full 16-lane store, so
    ``vals[c : c+16]`` and ``idx[c : c+16]`` are written (lanes past the count hold
    garbage, overwritten by the next call): callers need 16 slots of room past ``c``,
    which always holds when ``vals``/``idx`` are at least as long as ``x`` and ``c``
    counts nonzeros of x[:k0] (c <= k0). The memory-form compress store it replaces is
    microcoded on Intel cores: 1.5x slower for the whole compaction. Other targets get
    ``llvm.masked.compressstore`` (lowered lane by lane; :func:`compact_bits` is faster
    there and is what the kernels use).
    """
    for name, ty, dt in (("x", x, types.float32), ("vals", vals, types.float32), ("idx", idx, types.int32)):
        check_array(f"compress16: {name}", ty, 1, dt)
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
            dst = builder.gep(arr.data, [cv])
            if _HOST_AVX512:
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ty, [ty, ty, mty]), f"llvm.x86.avx512.mask.compress.{name}")
                packed = builder.call(fn, [vec, ir.Constant(ty, None), mask])
                builder.store(packed, builder.bitcast(dst, ty.as_pointer()), align=4)
            else:
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [ty, arr.data.type, mty]),
                    f"llvm.masked.compressstore.{name}")
                builder.call(fn, [vec, dst, mask])
        i16 = ir.IntType(16)
        pop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16, [i16]), "llvm.ctpop.i16")
        return builder.add(cv, builder.zext(builder.call(pop, [builder.bitcast(mask, i16)]), i64))

    return sig, codegen


@intrinsic
def nonzero_mask16(typingctx, x, k0):
    """Bit j of the result is set where x[k0 + j] != 0 (NaN counts as nonzero), j < 16.

    One vector compare and a mask move; portable (NEON builds the mask in a few shuffles).
    """
    check_array("nonzero_mask16: x", x, 1, types.float32)
    sig = types.int64(x, k0)

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        k0v = context.cast(builder, args[1], signature.args[1], types.int64)
        fty = ir.VectorType(ir.FloatType(), VEC)
        v = builder.load(builder.bitcast(builder.gep(xa.data, [k0v]), fty.as_pointer()), align=4)
        mask = builder.fcmp_unordered("!=", v, ir.Constant(fty, None))
        return builder.zext(builder.bitcast(mask, ir.IntType(16)), ir.IntType(64))

    return sig, codegen


def _int64_bit_op(llvm_name: str, zero_undef: bool | None, doc: str):
    """An int64 -> int64 intrinsic calling ``llvm_name`` (with its is-zero-poison flag if given)."""

    def impl(typingctx, m):
        sig = types.int64(m)

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            v = context.cast(builder, args[0], signature.args[0], types.int64)
            extra = [] if zero_undef is None else [ir.Constant(ir.IntType(1), int(zero_undef))]
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i64, [i64] + [ir.IntType(1)] * len(extra)), llvm_name)
            return builder.call(fn, [v] + extra)

        return sig, codegen

    impl.__doc__ = doc
    return intrinsic(impl)


cttz = _int64_bit_op("llvm.cttz.i64", True, "Index of the lowest set bit of a nonzero int64 (``llvm.cttz``).")
popcount = _int64_bit_op("llvm.ctpop.i64", None, "Number of set bits of an int64 (``llvm.ctpop``).")


def _transpose_masks():
    """Two-input shuffle masks of the 4-stage block-swap transpose of 16 vectors of 16.

    Stage ``b`` (8, 4, 2, 1) pairs vectors i and i+b (bit b of i clear) and swaps their
    off-diagonal b-blocks; after the four stages vector i holds column i.
    """
    return [(b, [l if not l & b else VEC + l - b for l in range(VEC)],
             [l + b if not l & b else VEC + l for l in range(VEC)]) for b in (8, 4, 2, 1)]


def _transposed_rows(builder, arr, row0, col0, elem=None):
    """The 16 ``<16 x elem>`` rows arr[row0 + j, col0 : col0 + 16] (float by default), transposed:
    vector i is column i."""
    vty = ir.VectorType(elem or ir.FloatType(), VEC)
    i64 = ir.IntType(64)
    base = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
    rows = []
    for j in range(VEC):
        off = builder.mul(builder.add(row0, ir.Constant(i64, j)), builder.extract_value(arr.strides, 0))
        p = builder.gep(builder.bitcast(builder.gep(base, [off]), arr.data.type), [col0])
        rows.append(builder.load(builder.bitcast(p, vty.as_pointer()), align=1 if elem else 4))
    for b, lo, hi in _transpose_masks():
        new = list(rows)
        for i in range(VEC):
            if i & b:
                continue
            new[i] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(ir.VectorType(ir.IntType(32), VEC), lo))
            new[i + b] = builder.shuffle_vector(rows[i], rows[i + b], ir.Constant(ir.VectorType(ir.IntType(32), VEC), hi))
        rows = new
    return rows


def _row_ptr(builder, arr, row, col, vty):
    base = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
    off = builder.mul(row, builder.extract_value(arr.strides, 0))
    p = builder.bitcast(builder.gep(base, [off]), arr.data.type)
    return builder.bitcast(builder.gep(p, [col]), vty.as_pointer())


def _store_transposed(context, builder, signature, args, vty, align, convert):
    """Codegen of ``f(src, r0, c0, dst, d0, q0)``: the float32 block src[r0:r0+16, c0:c0+16]
    transposed in registers, each column converted by ``convert`` and stored as dst row d0 + i."""
    sa = context.make_array(signature.args[0])(context, builder, args[0])
    da = context.make_array(signature.args[3])(context, builder, args[3])
    r0v, c0v, d0v, q0v = (context.cast(builder, args[j], signature.args[j], types.int64) for j in (1, 2, 4, 5))
    for i, row in enumerate(_transposed_rows(builder, sa, r0v, c0v)):
        builder.store(convert(row), _row_ptr(builder, da, builder.add(d0v, ir.Constant(ir.IntType(64), i)), q0v, vty),
                      align=align)
    return context.get_dummy_value()


@intrinsic
def transpose16(typingctx, src, r0, c0, dst, d0, q0):
    """dst[d0 + i, q0 + j] = src[r0 + j, c0 + i] for i, j < 16, in registers.

    ``src``/``dst`` 2-D float32 C-contiguous; no bounds checks (callers guarantee the
    16x16 blocks exist). 16 vector loads, 64 two-input shuffles, 16 vector stores:
    the sparse conv writes each block of 16 output pixels x Cout to its NCHW planes
    with it, 5x faster than the strided scalar loop it replaces.
    """
    check_array("transpose16: src", src, 2, types.float32)
    check_array("transpose16: dst", dst, 2, types.float32)
    sig = types.void(src, r0, c0, dst, d0, q0)

    def codegen(context, builder, signature, args):
        return _store_transposed(context, builder, signature, args, ir.VectorType(ir.FloatType(), VEC), 4,
                                 lambda row: row)

    return sig, codegen


@intrinsic
def transpose16_bytes(typingctx, src, r0, c0, dst, d0, q0):
    """dst[d0 + i, q0 + j] = int(src[r0 + j, c0 + i]) for i, j < 16: :func:`transpose16` stored as bytes.

    ``src`` 2-D float32 holding integers in the byte range of ``dst`` (2-D uint8/int8), both
    C-contiguous; no bounds checks. The transposed columns are converted (``fptosi``) and
    truncated to 16 bytes per store (x86: vcvttps2dq + vpmovdb; NEON: fcvtzs + xtn).
    """
    check_array("transpose16_bytes: src", src, 2, types.float32)
    if not (isinstance(dst, types.Array) and dst.ndim == 2 and dst.layout == "C"
            and dst.dtype in (types.uint8, types.int8)):
        raise TypingError(f"transpose16_bytes: dst must be a C-contiguous 2-D uint8/int8 array, got {dst}")
    sig = types.void(src, r0, c0, dst, d0, q0)

    def codegen(context, builder, signature, args):
        bty = ir.VectorType(ir.IntType(8), VEC)
        return _store_transposed(context, builder, signature, args, bty, 1,
                                 lambda row: builder.trunc(builder.fptosi(row, ir.VectorType(ir.IntType(32), VEC)), bty))

    return sig, codegen


@intrinsic
def transpose16_u8(typingctx, src, r0, c0, dst, d0, q0):
    """dst[d0 + i, q0 + j] = src[r0 + j, c0 + i] for i, j < 16: a 16x16 byte block, in registers.

    ``src``/``dst`` 2-D uint8/int8 (the same type) C-contiguous; no bounds checks. 16 loads of
    16 bytes, 64 byte shuffles (x86: punpck*, two ports on recent cores; NEON: zip/trn), 16
    stores: the int8 conv lays its (C, H*W) input out as (H*W, C) pixel rows with it, 4x
    faster than numpy's transposing copy.
    """
    for name, ty in (("src", src), ("dst", dst)):
        if not (isinstance(ty, types.Array) and ty.ndim == 2 and ty.layout == "C"
                and ty.dtype in (types.uint8, types.int8)):
            raise TypingError(f"transpose16_u8: {name} must be a C-contiguous 2-D uint8/int8 array, got {ty}")
    if src.dtype != dst.dtype:
        raise TypingError(f"transpose16_u8: src is {src.dtype} but dst is {dst.dtype}; expected the same type")
    sig = types.void(src, r0, c0, dst, d0, q0)

    def codegen(context, builder, signature, args):
        sa = context.make_array(signature.args[0])(context, builder, args[0])
        da = context.make_array(signature.args[3])(context, builder, args[3])
        r0v, c0v, d0v, q0v = (context.cast(builder, args[j], signature.args[j], types.int64) for j in (1, 2, 4, 5))
        bty = ir.VectorType(ir.IntType(8), VEC)
        for i, row in enumerate(_transposed_rows(builder, sa, r0v, c0v, ir.IntType(8))):
            builder.store(row, _row_ptr(builder, da, builder.add(d0v, ir.Constant(ir.IntType(64), i)), q0v, bty),
                          align=1)
        return context.get_dummy_value()

    return sig, codegen
