"""LLVM-level building blocks of the zero-skipping int8 kernels, as numba ``@intrinsic`` functions.

- :func:`mac_rows` / :data:`mac_taps`: the portable widening multiply-add over one active list /
  several runs of a conv's packed list (every CPU).
- :func:`dot_rows` / :data:`dot_taps`: the same through AVX-512 VNNI ``vpdpbusd`` on quads of
  active inputs (hosts with :data:`HAS_VNNI`; centred inputs in [0, 255]).
- :func:`udot_rows` / :data:`udot_taps`: the same quads through the aarch64 dot-product
  extension (``udot``, Cortex-A76/A78/Neoverse-N1; hosts with :data:`HAS_DOTPROD`; centred
  inputs in [0, 255]). The Cortex-A72 (Pi 4) has no ``dotprod`` and keeps the portable path.
- :func:`ne_mask64`: a 64-bit mask of the bytes that differ from the zero point (compaction).

``mac_rows(acc, w, vals, idx, i0, i1, base, n0, nvec)``:
``acc[n0 : n0+16*nvec] += sum_{i0 <= i < i1} vals[i] * int32(w[idx[i] + base, n0 : n0+16*nvec])``
with ``acc`` int32 held in ``nvec`` explicit ``<16 x i32>`` registers for the whole list, each
weight row read as ``<16 x i8>`` vectors, sign-extended, multiplied by the splatted centred
input and added (the portable widening multiply-add: LLVM emits pmovsxbd + pmulld + paddd
on x86, sxtl + mla on NEON). Written as plain numba loops the accumulators stayed in
memory and the loop ran scalar (3x slower than the fp32 kernel); the explicit vectors fix
both, as they did for fp32.
"""
from __future__ import annotations

import ctypes
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from edge_runtime.kernels.simd import (AccumulatorRows, jit_target_has, row_list_args, row_list_typing,
                                       tap_lists, tap_typing)

__all__ = ["VEC", "HAS_VNNI", "HAS_DOTPROD", "host_has_vnni", "host_has_dotprod", "mac_rows", "dot_rows",
           "udot_rows", "mac_taps", "dot_taps", "udot_taps", "ne_mask64"]

#: int32 lanes per explicit vector.
VEC = 16


class _MacRows(AccumulatorRows):
    """IR emitter: ``nv`` int32 vector registers += v * sext(w[k, col : col + 16*nv])."""

    def __init__(self, context, builder, w_ty, w_val, acc_ty, acc_val, col, nv):
        self.builder = builder
        acc_a = context.make_array(acc_ty)(context, builder, acc_val)
        w_a = context.make_array(w_ty)(context, builder, w_val)
        self.i64 = ir.IntType(64)
        self.i32 = ir.IntType(32)
        self.vty = ir.VectorType(self.i32, VEC)
        self.bty = ir.VectorType(ir.IntType(8), VEC)
        self.accp = builder.gep(acc_a.data, [col])
        self.regs = [cgutils.alloca_once(builder, self.vty) for _ in range(nv)]
        self.wdata = w_a.data  # i8*
        self.rowstride = builder.extract_value(w_a.strides, 0)
        self.col = col

    def row(self, k, v):
        b = self.builder
        splat = ir.Constant(ir.VectorType(self.i32, VEC), None)
        vs = b.shuffle_vector(b.insert_element(ir.Constant(self.vty, None), v, ir.Constant(self.i32, 0)),
                              ir.Constant(self.vty, None), splat)
        row = b.gep(self.wdata, [b.add(b.mul(k, self.rowstride), self.col)])
        for j, reg in enumerate(self.regs):
            p = b.bitcast(b.gep(row, [ir.Constant(self.i64, VEC * j)]), self.bty.as_pointer())
            wv = b.sext(b.load(p, align=1), self.vty)
            b.store(b.add(b.load(reg), b.mul(wv, vs)), reg)


@intrinsic
def mac_rows(typingctx, acc, w, vals, idx, i0, i1, base, n0, nvec):
    """acc[n0 : n0+16*nvec] += sum_{i0 <= i < i1} vals[i] * w[idx[i] + base, n0 : n0+16*nvec].

    ``acc`` 1-D int32 and ``w`` 2-D int8, C-contiguous; ``vals``/``idx`` 1-D int32;
    ``nvec`` a compile-time constant. No bounds checks: callers guarantee
    ``idx[i] + base < w.shape[0]`` and ``n0 + 16*nvec <=`` both row lengths.
    """
    nv, sig = row_list_typing("mac_rows", acc, w, vals, idx, i0, i1, base, n0, nvec,
                              types.int32, types.int8, types.int32)

    def codegen(context, builder, signature, args):
        vals_a, idx_a, start, stop, off, col = row_list_args(context, builder, signature, args)
        em = _MacRows(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        em.list_rows(idx_a, vals_a, start, stop, off)
        em.store()
        return context.get_dummy_value()

    return sig, codegen


def host_has_vnni() -> bool:
    """True where numba's JIT target has AVX-512 VNNI (``vpdpbusd`` on 512-bit vectors): the host,
    or what ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` retarget it to (a named CPU without a feature
    list counts as without VNNI, so a portable cache never holds ``vpdpbusd``)."""
    return all(jit_target_has(f, lambda name: False) for f in ("avx512vnni", "avx512bw"))


HAS_VNNI = host_has_vnni()

#: Linux ``AT_HWCAP`` and its aarch64 bit for the dot-product instructions (``HWCAP_ASIMDDP``).
_AT_HWCAP, _HWCAP_ASIMDDP = 16, 1 << 20


def _hwcap_has_asimddp() -> bool:
    """True where the kernel (or qemu-user, for the CPU it emulates) reports ``asimddp``."""
    try:
        return bool(ctypes.CDLL(None).getauxval(_AT_HWCAP) & _HWCAP_ASIMDDP)
    except (OSError, AttributeError):  # pragma: no cover - no glibc getauxval
        return False


def host_has_dotprod() -> bool:
    """True where the CPU runs aarch64 ``udot``/``sdot`` and numba's JIT may emit them.

    Both must hold: the kernel's ``AT_HWCAP`` has ``asimddp`` (the CPU executes it; false on
    the Cortex-A72) and numba's target features include ``dotprod`` (else LLVM aborts the
    process with "Cannot select ... UDOT"). Numba's features are ``NUMBA_CPU_FEATURES`` when
    set, else LLVM's host features, which LLVM reads from ``/proc/cpuinfo``: right on a real
    Cortex-A76, empty under qemu-user (that file is the x86 host's), so the arm64 tests set
    ``NUMBA_CPU_FEATURES`` for the CPU qemu emulates (``scripts/arm64/run_tests.sh``).
    """
    if platform.machine() not in ("aarch64", "arm64") or not _hwcap_has_asimddp():
        return False
    return jit_target_has("dotprod")


HAS_DOTPROD = host_has_dotprod()


class _DotQuads(_MacRows):
    """VNNI emitter: four list entries at a time, ``acc += vpdpbusd(u8 quads of v, s8 quads of w)``.

    The four weight rows' bytes are interleaved into quads per output (shufflevector, which
    LLVM lowers to byte unpacks); the four centred inputs, which must lie in [0, 255]
    (the caller checks), are splatted as one u8 quad.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.dot = cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(self.vty, [self.vty] * 3), "llvm.x86.avx512.vpdpbusd.512")

    def quad_rows(self, idx_a, vals_a, start, stop, base):
        """``quad(i)`` for i = start, start+4, ... while i + 4 <= stop; returns the first unused i."""
        b = self.builder
        four = ir.Constant(self.i64, 4)
        nquads = b.sdiv(b.sub(stop, start), four)
        with cgutils.for_range(b, nquads, intp=self.i64) as loop:
            self.quad(idx_a, vals_a, b.add(start, b.mul(loop.index, four)), base)
        return b.add(start, b.mul(nquads, four))

    def quad(self, idx_a, vals_a, i, base):
        b = self.builder
        rows, packed = [], ir.Constant(self.i32, 0)
        for r in range(4):
            ir_ = b.add(i, ir.Constant(self.i64, r))
            k = b.add(b.sext(b.load(b.gep(idx_a.data, [ir_])), self.i64), base)
            rows.append(b.gep(self.wdata, [b.add(b.mul(k, self.rowstride), self.col)]))
            v = b.and_(b.load(b.gep(vals_a.data, [ir_])), ir.Constant(self.i32, 255))
            packed = b.or_(packed, b.shl(v, ir.Constant(self.i32, 8 * r)))
        vs = b.shuffle_vector(b.insert_element(ir.Constant(self.vty, None), packed, ir.Constant(self.i32, 0)),
                              ir.Constant(self.vty, None), ir.Constant(ir.VectorType(self.i32, VEC), None))
        pair = ir.Constant(ir.VectorType(self.i32, 32), [x for n in range(16) for x in (n, 16 + n)])
        quad = ir.Constant(ir.VectorType(self.i32, 64),
                           [x for n in range(16) for x in (2 * n, 2 * n + 1, 32 + 2 * n, 33 + 2 * n)])
        for j, reg in enumerate(self.regs):
            w = [b.load(b.bitcast(b.gep(p, [ir.Constant(self.i64, VEC * j)]), self.bty.as_pointer()), align=1)
                 for p in rows]
            q = b.shuffle_vector(b.shuffle_vector(w[0], w[1], pair), b.shuffle_vector(w[2], w[3], pair), quad)
            b.store(b.call(self.dot, [b.load(reg), vs, b.bitcast(q, self.vty)]), reg)


@intrinsic
def dot_rows(typingctx, acc, w, vals, idx, i0, i1, base, n0, nvec):
    """:func:`mac_rows` with AVX-512 VNNI: quads of entries through ``vpdpbusd``, the rest widened.

    Only on hosts where :data:`HAS_VNNI` is true, and only when every ``vals[i0:i1]`` lies in
    [0, 255] (the u8 operand of ``vpdpbusd``); same contract as :func:`mac_rows` otherwise.
    """
    nv, sig = row_list_typing("dot_rows", acc, w, vals, idx, i0, i1, base, n0, nvec,
                              types.int32, types.int8, types.int32)

    def codegen(context, builder, signature, args):
        vals_a, idx_a, start, stop, off, col = row_list_args(context, builder, signature, args)
        cls = _DotUnpack if nv % 4 == 0 else _DotQuads
        em = cls(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        if nv % 4 == 0:
            em.quad_all(idx_a, vals_a, start, stop, off)
        else:
            rest = em.quad_rows(idx_a, vals_a, start, stop, off)
            em.list_rows(idx_a, vals_a, rest, stop, off)
        em.store()
        return context.get_dummy_value()

    return sig, codegen


def _unpack_masks() -> tuple[list[int], ...]:
    """Byte masks of vpunpckl/hbw and vpunpckl/hwd on 64-byte vectors (per 128-bit lane)."""
    lo_b = [x for lane in range(4) for i in range(8) for x in (16 * lane + i, 64 + 16 * lane + i)]
    hi_b = [x for lane in range(4) for i in range(8, 16) for x in (16 * lane + i, 64 + 16 * lane + i)]

    def words(first: int) -> list[int]:
        return [x for lane in range(4) for i in range(first, first + 4)
                for x in (16 * lane + 2 * i, 16 * lane + 2 * i + 1, 64 + 16 * lane + 2 * i, 65 + 16 * lane + 2 * i)]

    return lo_b, hi_b, words(0), words(4)


class _DotUnpack(_DotQuads):
    """VNNI emitter for 64-output chunks: four 64-byte rows interleaved with 8 lane-local unpacks.

    The unpacks leave register j, lane 4L + i holding output 16L + 4j + i of the chunk, so
    the accumulators are transposed (128-bit blocks, 4x4) when loaded and stored, and
    every entry, leftovers included (as a quad padded with zero values), takes this path.
    """

    def __init__(self, *args):
        super().__init__(*args)
        i32v = ir.VectorType(self.i32, 64)
        self.masks = [ir.Constant(i32v, m) for m in _unpack_masks()]
        self.b64 = ir.VectorType(ir.IntType(8), 64)

    def _blocks(self, vecs, j):
        """[vecs[0].block j, vecs[1].block j, vecs[2].block j, vecs[3].block j] (blocks of 4 lanes)."""
        b = self.builder
        lanes = [4 * j + i for i in range(4)] + [16 + 4 * j + i for i in range(4)]
        pick = ir.Constant(ir.VectorType(self.i32, 8), lanes)
        lo = b.shuffle_vector(vecs[0], vecs[1], pick)
        hi = b.shuffle_vector(vecs[2], vecs[3], pick)
        return b.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(self.i32, 16), list(range(16))))

    def load(self):
        for c in range(0, len(self.regs), 4):
            mem = [self.builder.load(self._acc_slot(c + m), align=4) for m in range(4)]
            for j in range(4):
                self.builder.store(self._blocks(mem, j), self.regs[c + j])

    def store(self):
        for c in range(0, len(self.regs), 4):
            regs = [self.builder.load(self.regs[c + j]) for j in range(4)]
            for m in range(4):
                self.builder.store(self._blocks(regs, m), self._acc_slot(c + m), align=4)

    def quad_all(self, idx_a, vals_a, start, stop, base):
        """Every entry start <= i < stop as quads; the last one padded with zero values."""
        b = self.builder
        rest = self.quad_rows(idx_a, vals_a, start, stop, base)
        with b.if_then(b.icmp_signed("<", rest, stop)):
            self.quad(idx_a, vals_a, rest, base, stop)

    def quad(self, idx_a, vals_a, i, base, stop=None):
        b = self.builder
        rows, packed = [], ir.Constant(self.i32, 0)
        for r in range(4):
            ir_ = b.add(i, ir.Constant(self.i64, r))
            if stop is not None:  # padded leftover quad: entries past stop reuse entry i with value 0
                live = b.icmp_signed("<", ir_, stop)
                ir_ = b.select(live, ir_, i)
            k = b.add(b.sext(b.load(b.gep(idx_a.data, [ir_])), self.i64), base)
            rows.append(b.gep(self.wdata, [b.add(b.mul(k, self.rowstride), self.col)]))
            v = b.and_(b.load(b.gep(vals_a.data, [ir_])), ir.Constant(self.i32, 255))
            if stop is not None:
                v = b.select(live, v, ir.Constant(self.i32, 0))
            packed = b.or_(packed, b.shl(v, ir.Constant(self.i32, 8 * r)))
        self.dot_quad(rows, packed)

    def dot_quad(self, rows, packed):
        """acc += vpdpbusd(splat u8 quad ``packed``, the four weight rows at ``rows`` interleaved)."""
        b = self.builder
        vs = b.shuffle_vector(b.insert_element(ir.Constant(self.vty, None), packed, ir.Constant(self.i32, 0)),
                              ir.Constant(self.vty, None), ir.Constant(ir.VectorType(self.i32, VEC), None))
        lo_b, hi_b, lo_w, hi_w = self.masks
        for c in range(0, len(self.regs), 4):
            w = [b.load(b.bitcast(b.gep(p, [ir.Constant(self.i64, VEC * c)]), self.b64.as_pointer()), align=1)
                 for p in rows]
            ab = (b.shuffle_vector(w[0], w[1], lo_b), b.shuffle_vector(w[0], w[1], hi_b))
            cd = (b.shuffle_vector(w[2], w[3], lo_b), b.shuffle_vector(w[2], w[3], hi_b))
            quads = (b.shuffle_vector(ab[0], cd[0], lo_w), b.shuffle_vector(ab[0], cd[0], hi_w),
                     b.shuffle_vector(ab[1], cd[1], lo_w), b.shuffle_vector(ab[1], cd[1], hi_w))
            for j, q in enumerate(quads):
                reg = self.regs[c + j]
                b.store(b.call(self.dot, [b.load(reg), vs, b.bitcast(q, self.vty)]), reg)


class _UdotQuads(_DotQuads):
    """aarch64 dotprod emitter: four list entries at a time through ``udot`` (u8 x u8 -> i32).

    ``udot`` multiplies unsigned bytes only and ``sdot`` signed ones, while the products
    here are centred inputs in [0, 255] times int8 weights. ``sdot`` would need the inputs
    in [-128, 127] (v - 128, with a correction of 128 * sum(w) per output and active row,
    a second dot per quad), so the weights are shifted instead: ``w ^ 0x80 = w + 128`` read
    as u8, and ``v * w = v * (w + 128) - 128 * v``. The correction ``128 * sum(v)`` is the
    same for every output: one scalar summed over the quads and subtracted once in
    ``store()``. Exact in int32 arithmetic modulo 2**32, as the widening path is
    (``udot`` partial sums are at most 4 * 255 * 255). Leftover entries (< 4) take the
    widening path. Each ``<16 x i32>`` register is four ``v4i32`` udot accumulators.
    """

    def __init__(self, *args):
        _MacRows.__init__(self, *args)
        v4, v16 = ir.VectorType(self.i32, 4), ir.VectorType(ir.IntType(8), 16)
        self.dot = cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(v4, [v4, v16, v16]), "llvm.aarch64.neon.udot.v4i32.v16i8")
        self.vsum = cgutils.alloca_once(self.builder, self.i32)  # sum of the inputs taken as quads

    def load(self):
        super().load()
        self.builder.store(ir.Constant(self.i32, 0), self.vsum)

    def store(self):
        b = self.builder
        corr = b.mul(b.load(self.vsum), ir.Constant(self.i32, 128))
        splat = b.shuffle_vector(b.insert_element(ir.Constant(self.vty, None), corr, ir.Constant(self.i32, 0)),
                                 ir.Constant(self.vty, None), ir.Constant(ir.VectorType(self.i32, VEC), None))
        for reg in self.regs:
            b.store(b.sub(b.load(reg), splat), reg)
        super().store()

    def quad(self, idx_a, vals_a, i, base):
        b = self.builder
        rows, packed, vsum = [], ir.Constant(self.i32, 0), b.load(self.vsum)
        for r in range(4):
            ir_ = b.add(i, ir.Constant(self.i64, r))
            k = b.add(b.sext(b.load(b.gep(idx_a.data, [ir_])), self.i64), base)
            rows.append(b.gep(self.wdata, [b.add(b.mul(k, self.rowstride), self.col)]))
            v = b.and_(b.load(b.gep(vals_a.data, [ir_])), ir.Constant(self.i32, 255))
            vsum = b.add(vsum, v)
            packed = b.or_(packed, b.shl(v, ir.Constant(self.i32, 8 * r)))
        b.store(vsum, self.vsum)
        v4 = ir.VectorType(self.i32, 4)
        vs = b.bitcast(b.shuffle_vector(b.insert_element(ir.Constant(v4, None), packed, ir.Constant(self.i32, 0)),
                                        ir.Constant(v4, None), ir.Constant(v4, None)), ir.VectorType(ir.IntType(8), 16))
        flip = ir.Constant(self.bty, [0x80] * VEC)
        i16x8 = ir.VectorType(ir.IntType(16), 8)
        zip_b = [ir.Constant(ir.VectorType(self.i32, 16), [x for n in range(h, h + 8) for x in (n, 16 + n)])
                 for h in (0, 8)]  # zip1/zip2 .16b
        zip_h = [ir.Constant(ir.VectorType(self.i32, 8), [x for n in range(h, h + 4) for x in (n, 8 + n)])
                 for h in (0, 4)]  # zip1/zip2 .8h
        pick = [ir.Constant(v4, list(range(4 * m, 4 * m + 4))) for m in range(4)]
        for j, reg in enumerate(self.regs):
            w = [b.xor(b.load(b.bitcast(b.gep(p, [ir.Constant(self.i64, VEC * j)]), self.bty.as_pointer()),
                              align=1), flip) for p in rows]
            # quads[m]: bytes (w0[n], w1[n], w2[n], w3[n]) for the outputs n = 4m .. 4m+3 of this register
            pairs01 = [b.bitcast(b.shuffle_vector(w[0], w[1], z), i16x8) for z in zip_b]
            pairs23 = [b.bitcast(b.shuffle_vector(w[2], w[3], z), i16x8) for z in zip_b]
            quads = [b.bitcast(b.shuffle_vector(pairs01[h], pairs23[h], z), self.bty) for h in (0, 1) for z in zip_h]
            acc = b.load(reg)
            parts = [b.call(self.dot, [b.shuffle_vector(acc, acc, pick[m]), vs, quads[m]]) for m in range(4)]
            eight = ir.Constant(ir.VectorType(self.i32, 8), list(range(8)))
            b.store(b.shuffle_vector(b.shuffle_vector(parts[0], parts[1], eight),
                                     b.shuffle_vector(parts[2], parts[3], eight),
                                     ir.Constant(ir.VectorType(self.i32, 16), list(range(16)))), reg)


@intrinsic
def udot_rows(typingctx, acc, w, vals, idx, i0, i1, base, n0, nvec):
    """:func:`mac_rows` with aarch64 ``udot``: quads of entries as dot products, the rest widened.

    Only on hosts where :data:`HAS_DOTPROD` is true, and only when every ``vals[i0:i1]`` lies
    in [0, 255]; same contract as :func:`mac_rows` otherwise.
    """
    nv, sig = row_list_typing("udot_rows", acc, w, vals, idx, i0, i1, base, n0, nvec,
                              types.int32, types.int8, types.int32)

    def codegen(context, builder, signature, args):
        vals_a, idx_a, start, stop, off, col = row_list_args(context, builder, signature, args)
        em = _UdotQuads(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        em.list_rows(idx_a, vals_a, em.quad_rows(idx_a, vals_a, start, stop, off), stop, off)
        em.store()
        return context.get_dummy_value()

    return sig, codegen


def _taps(kind: str):
    """mac_taps / dot_taps / udot_taps (``kind`` "mac", "vnni", "udot") over several runs of a CSR list."""

    def impl(typingctx, acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, nvec):
        nv, sig = tap_typing(f"{kind}_taps", (acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, nvec),
                             (types.int32, types.int8, types.int32, types.int32))

        def codegen(context, builder, signature, args):
            vals_a, idx_a, runs, col = tap_lists(context, builder, signature, args)
            vnni, quads = kind == "vnni", kind != "mac"
            cls = {"mac": _MacRows, "udot": _UdotQuads}.get(kind, _DotUnpack if nv % 4 == 0 else _DotQuads)
            em = cls(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
            em.load()
            with runs() as (base, start, stop):
                if vnni and nv % 4 == 0:
                    em.quad_all(idx_a, vals_a, start, stop, base)
                elif quads:
                    em.list_rows(idx_a, vals_a, em.quad_rows(idx_a, vals_a, start, stop, base), stop, base)
                else:
                    em.list_rows(idx_a, vals_a, start, stop, base)
            em.store()
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(impl)


#: For t < ntaps: acc[n0 : n0+16*nvec] += sum over ptr[tlo[t]] <= i < ptr[thi[t]] of vals[i] *
#: w[idx[i] + tbase[t], n0 : n0+16*nvec] (a conv's kernel rows as runs of its packed pixel lists).
mac_taps = _taps("mac")
#: :data:`mac_taps` through AVX-512 VNNI quads (values in [0, 255], hosts with :data:`HAS_VNNI`).
dot_taps = _taps("vnni")
#: :data:`mac_taps` through aarch64 ``udot`` quads (values in [0, 255], hosts with :data:`HAS_DOTPROD`).
udot_taps = _taps("udot")


@intrinsic
def ne_mask64(typingctx, x, k0, zp):
    """Bit i of the int64 result is set where ``x[k0 + i] != zp``, for 0 <= i < 64.

    ``x`` 1-D C-contiguous uint8/int8; no bounds check (callers guarantee ``k0 + 64 <= len(x)``).
    One vector compare and a mask move on AVX-512 (vpcmpb + kmovq); portable IR elsewhere.
    """
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" and x.dtype in (types.uint8, types.int8)):
        raise TypingError(f"ne_mask64: x must be a C-contiguous 1-D uint8/int8 array, got {x}")
    sig = types.int64(x, k0, zp)

    def codegen(context, builder, signature, args):
        x_a = context.make_array(signature.args[0])(context, builder, args[0])
        start = context.cast(builder, args[1], signature.args[1], types.int64)
        z = builder.trunc(context.cast(builder, args[2], signature.args[2], types.int64), ir.IntType(8))
        vty = ir.VectorType(ir.IntType(8), 64)
        p = builder.bitcast(builder.gep(x_a.data, [start]), vty.as_pointer())
        v = builder.load(p, align=1)
        zs = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, None), z, ir.Constant(ir.IntType(32), 0)),
                                    ir.Constant(vty, None), ir.Constant(ir.VectorType(ir.IntType(32), 64), None))
        return builder.bitcast(builder.icmp_unsigned("!=", v, zs), ir.IntType(64))

    return sig, codegen
