"""The AVX-512 VNNI conv tap loop on a packed list: u8 values as bytes, weight rows as offsets.

:data:`edge_runtime.kernels.simd_int8.dot_taps` reads each list entry as an int32 value and
an int32 row index, so every quad of entries spent about 30 scalar instructions (4 value
loads, 3 shifts and 3 ors to pack the u8 quad, a broadcast from a general register on the
shuffle port, 4 index loads, 4 multiplies by the row stride) beside its 16 byte unpacks and
8 ``vpdpbusd``. :func:`dot_taps_packed` reads the same list in the form the quads need:

- ``vb`` (uint8): the centred values (all in [0, 255], the VNNI condition), so four
  consecutive entries are one 32-bit load, broadcast from memory (a load-port uop);
- ``off`` (int32): each entry's weight row times the row stride, so a row's address is one
  add;

and otherwise does what ``dot_taps`` does with 64-output chunks (``nvec`` a multiple of 4):
the same interleave and ``vpdpbusd`` (:class:`edge_runtime.kernels.simd_int8._DotUnpack`),
the same padded leftover quad. Only on hosts with :data:`edge_runtime.kernels.simd_int8.HAS_VNNI`.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from edge_runtime.kernels.simd import tap_lists, tap_typing
from edge_runtime.kernels.simd_int8 import _DotUnpack

__all__ = ["dot_taps_packed"]


class _DotPacked(_DotUnpack):
    """:class:`_DotUnpack` whose quads read packed u8 values and byte offsets from ``rowbase``."""

    def run(self, vb_a, off_a, start, stop, rowbase):
        """Every entry start <= i < stop as quads of rows ``rowbase + off[i]``; the last one padded."""
        b = self.builder
        four = ir.Constant(self.i64, 4)
        nquads = b.sdiv(b.sub(stop, start), four)
        with cgutils.for_range(b, nquads, intp=self.i64) as loop:
            self.packed_quad(vb_a, off_a, b.add(start, b.mul(loop.index, four)), rowbase, None)
        rest = b.add(start, b.mul(nquads, four))
        with b.if_then(b.icmp_signed("<", rest, stop)):
            self.packed_quad(vb_a, off_a, rest, rowbase, stop)

    def packed_quad(self, vb_a, off_a, i, rowbase, stop):
        b = self.builder
        rows = []
        for r in range(4):
            ir_ = b.add(i, ir.Constant(self.i64, r))
            if stop is not None:  # padded leftover quad: entries past stop reuse entry i's row
                ir_ = b.select(b.icmp_signed("<", ir_, stop), ir_, i)
            rows.append(b.gep(rowbase, [b.sext(b.load(b.gep(off_a.data, [ir_])), self.i64)]))
        packed = b.load(b.bitcast(b.gep(vb_a.data, [i]), self.i32.as_pointer()), align=1)
        if stop is not None:  # keep the live bytes only: (1 << 8 * (stop - i)) - 1, stop - i in 1..3
            live = b.trunc(b.sub(stop, i), self.i32)
            mask = b.sub(b.shl(ir.Constant(self.i32, 1), b.mul(live, ir.Constant(self.i32, 8))),
                         ir.Constant(self.i32, 1))
            packed = b.and_(packed, mask)
        self.dot_quad(rows, packed)


def _impl(typingctx, acc, w, vb, off, ptr, tlo, thi, tbase, ntaps, n0, nvec):
    nv, sig = tap_typing("dot_taps_packed", (acc, w, vb, off, ptr, tlo, thi, tbase, ntaps, n0, nvec),
                         (types.int32, types.int8, types.uint8, types.int32), ("acc", "w", "vb", "off"))
    if nv % 4:
        raise TypingError(f"dot_taps_packed: nvec must be a literal multiple of 4, got {nvec}")

    def codegen(context, builder, signature, args):
        vb_a, off_a, runs, col = tap_lists(context, builder, signature, args)
        em = _DotPacked(context, builder, signature.args[1], args[1], signature.args[0], args[0], col, nv)
        em.load()
        with runs() as (base, start, stop):
            em.run(vb_a, off_a, start, stop, builder.gep(em.wdata, [builder.add(builder.mul(base, em.rowstride), col)]))
        em.store()
        return context.get_dummy_value()

    return sig, codegen


#: For t < ntaps: acc[n0 : n0+16*nvec] += sum over ptr[tlo[t]] <= i < ptr[thi[t]] of vb[i] *
#: w[tbase[t] + off[i] / rowstride, n0 : n0+16*nvec], through VNNI quads. ``off[i]`` is the entry's
#: row times w's row stride (bytes); ``vb`` needs 3 readable bytes past the last entry.
dot_taps_packed = intrinsic(_impl)
