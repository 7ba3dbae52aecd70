"""AVX-512 VBMI2 compaction of int8 activations straight into the VNNI conv's packed list.

The portable compaction (:func:`edge_runtime.kernels.sparse_int8.compact_append`) visits
the set bits of a 64-byte chunk's nonzero mask one at a time, writing an int32 value and
an int32 index per active input (~2.2 ns each), and the VNNI conv then packs that list
again as u8 values and byte row offsets (:mod:`edge_runtime.kernels.simd_int8_taps`).
:func:`compress_packed64` writes the packed form directly, without a per-entry loop:

- the centred bytes ``x - zp`` of a chunk go through one register-form ``vpcompressb``
  and one 64-byte store to ``vb``;
- their byte row offsets ``obase + j * rs`` (lane j) go through four register-form
  ``vpcompressd`` (16 lanes each) and four full 16-lane stores to ``off``.

Full-width stores write past the count (garbage, overwritten by the next call), so ``vb``
and ``off`` need 64 slots of room past the last entry. The memory-form compress stores are
microcoded on Intel cores (see :func:`edge_runtime.kernels.simd.compress16`), hence the
register forms. Only on hosts with :data:`HAS_VBMI2` (``vpcompressb`` is AVX-512 VBMI2:
Ice Lake and later, Zen 4); everywhere else the set-bit walk stays.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from edge_runtime.kernels.simd import jit_target_has
from edge_runtime.kernels.simd_int8 import host_has_vnni

__all__ = ["HAS_VBMI2", "host_has_vbmi2", "compress_packed64"]


def host_has_vbmi2() -> bool:
    """True where numba's JIT target has AVX-512 VNNI and VBMI2 (``vpcompressb``); a named CPU
    without a feature list counts as without, as for VNNI (:func:`simd_int8.host_has_vnni`)."""
    return host_has_vnni() and jit_target_has("avx512vbmi2", lambda name: False)


HAS_VBMI2 = host_has_vbmi2()


def _compress(builder, vec, mask, name):
    """Register-form AVX-512 compress of ``vec`` under ``mask`` (lanes past the count undefined)."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec.type, [vec.type, vec.type, mask.type]),
        f"llvm.x86.avx512.mask.compress.{name}")
    return builder.call(fn, [vec, ir.Constant(vec.type, None), mask])


def _splat(builder, value, vty):
    lanes = ir.Constant(ir.VectorType(ir.IntType(32), vty.count), None)
    return builder.shuffle_vector(builder.insert_element(ir.Constant(vty, None), value, ir.Constant(ir.IntType(32), 0)),
                                  ir.Constant(vty, None), lanes)


@intrinsic
def compress_packed64(typingctx, x, k0, skip, zp, vb, off, c, obase, rs):
    """Append the entries ``x[k0 + j] != zp``, skip <= j < 64: ``vb[c:] = x - zp`` (bytes), ``off[c:] = obase + j*rs``.

    ``x`` 1-D uint8/int8, ``vb`` 1-D uint8, ``off`` 1-D int32, all C-contiguous; no bounds checks:
    callers guarantee ``k0 + 64 <= len(x)`` and 64 slots of room in ``vb``/``off`` past ``c``.

    Returns:
        (new count, below): ``below`` has bit j set where ``x[k0 + j] < zp`` in x's own signedness
        (j >= skip); the bytes written for such entries are ``x - zp`` modulo 256, so callers
        use the list only when no chunk had a bit of ``below`` set.
    """
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" and x.dtype in (types.uint8, types.int8)):
        raise TypingError(f"compress_packed64: x must be a C-contiguous 1-D uint8/int8 array, got {x}")
    for name, ty, dt in (("vb", vb, types.uint8), ("off", off, types.int32)):
        if not (isinstance(ty, types.Array) and ty.ndim == 1 and ty.layout == "C" and ty.dtype == dt):
            raise TypingError(f"compress_packed64: {name} must be a C-contiguous 1-D {dt} array, got {ty}")
    signed = x.dtype == types.int8
    sig = types.UniTuple(types.int64, 2)(x, k0, skip, zp, vb, off, c, obase, rs)

    def codegen(context, builder, signature, args):
        b = builder
        x_a, vb_a, off_a = (context.make_array(signature.args[j])(context, b, args[j]) for j in (0, 4, 5))
        k0v, skipv, zpv, cv, obv, rsv = (context.cast(b, args[j], signature.args[j], types.int64)
                                         for j in (1, 2, 3, 6, 7, 8))
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        bty, dty = ir.VectorType(i8, 64), ir.VectorType(i32, 16)
        v = b.load(b.bitcast(b.gep(x_a.data, [k0v]), bty.as_pointer()), align=1)
        zs = _splat(b, b.trunc(zpv, i8), bty)
        live = b.shl(ir.Constant(i64, -1), skipv)  # lanes j >= skip
        m64 = b.and_(b.bitcast(b.icmp_unsigned("!=", v, zs), i64), live)
        lt = b.icmp_signed("<", v, zs) if signed else b.icmp_unsigned("<", v, zs)
        below = b.and_(b.bitcast(lt, i64), live)
        vals = _compress(b, b.sub(v, zs), b.bitcast(m64, ir.VectorType(ir.IntType(1), 64)), "v64i8")
        b.store(vals, b.bitcast(b.gep(vb_a.data, [cv]), bty.as_pointer()), align=1)
        rs32 = b.trunc(rsv, i32)
        lanes = b.add(_splat(b, b.trunc(obv, i32), dty),
                      b.mul(_splat(b, rs32, dty), ir.Constant(dty, list(range(16)))))
        pop16 = cgutils.get_or_insert_function(b.module, ir.FunctionType(ir.IntType(16), [ir.IntType(16)]),
                                               "llvm.ctpop.i16")
        pos = cv
        for s in range(4):
            sub = b.trunc(b.lshr(m64, ir.Constant(i64, 16 * s)), ir.IntType(16))
            offs = b.add(lanes, _splat(b, b.mul(rs32, ir.Constant(i32, 16 * s)), dty)) if s else lanes
            packed = _compress(b, offs, b.bitcast(sub, ir.VectorType(ir.IntType(1), 16)), "v16i32")
            b.store(packed, b.bitcast(b.gep(off_a.data, [pos]), dty.as_pointer()), align=4)
            pos = b.add(pos, b.zext(b.call(pop16, [sub]), i64))
        return context.make_tuple(b, signature.return_type, [pos, below])

    return sig, codegen
