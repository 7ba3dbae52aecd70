"""Shared numba helpers of the zero-skipping kernels (sparse_matmul, sparse_conv).

The hot loop of every sparse kernel is ``acc[n0:n0+B] += sum_i vals[i] * w[idx[i] + base,
n0:n0+B]`` over one input row's nonzeros: :func:`accumulate` (one list) and
:func:`accumulate_taps` (runs of a conv's packed pixel list) run it in register blocks of
``BLOCK`` floats with the intrinsics of :mod:`edge_runtime.kernels.simd` (explicit
``<16 x float>`` vectors; the B accumulator floats live in registers for the whole list,
each nonzero costs B/16 vector loads and FMAs). Written with plain numba loops LLVM kept
``acc`` in memory, emitted 256-bit code (it prefers 256-bit vectors on AVX-512 CPUs) and
one dependency chain per vector.

The lists come from :func:`compact` (16 values at a time: an AVX-512 register compress
where the host has one, else the set bits of a 16-lane compare mask) and
:func:`compact_pixels` (a conv input's planes into one packed list, walking 64-bit masks
of 4 planes). Biases are padded once per call (:func:`padded_bias`). Scratch buffers come
from :func:`workspace` (per thread, reused across calls) and prepared weights from
:func:`aligned_empty` (64-byte aligned rows).

Only the register block ``BLOCK`` is chosen for the host: 128 floats with AVX-512 (8 of
its 32 zmm registers), 64 otherwise (8 of 16 ymm on AVX2, 16 of 32 NEON q registers).
numba's on-disk cache (``cache=True``) keys each entry by CPU name and features, so a
cache written on one machine is not loaded on another with different vector units.
"""
from __future__ import annotations

import threading

import numba
import numpy as np

from edge_runtime.kernels.fastmath import FAST
from edge_runtime.resources import aligned_empty  # noqa: F401  (re-exported: the kernels' layouts use it)
from edge_runtime.kernels.simd import (
    VEC,
    axpy_rows,
    axpy_taps,
    compress16,
    cttz,
    host_has_avx512,
    nonzero_mask16,
    popcount,
)

__all__ = [
    "BLOCK", "VEC", "HAS_AVX512", "axpy_rows", "axpy_taps", "compress16", "nonzero_mask16", "cttz",
    "popcount", "accumulate", "accumulate_taps", "compact", "compact_bits", "compact_pixels", "activate",
    "padded_bias", "fill_bias", "store_row", "aligned_empty", "workspace",
]


#: The host has AVX-512: 32 zmm registers and a vector compress instruction.
HAS_AVX512 = host_has_avx512()
#: Register block of :func:`axpy_rows` on this host, a multiple of ``VEC``: 128 floats
#: with AVX-512, else 64.
BLOCK = 128 if HAS_AVX512 else 64
_NBLOCK_VEC = BLOCK // VEC


@numba.njit(cache=True, fastmath=FAST)
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


@numba.njit(cache=True, fastmath=FAST)
def accumulate_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps):  # pragma: no cover - compiled
    """:func:`accumulate` over runs of input pixels' nonzero lists (:func:`axpy_taps`)."""
    t = acc.shape[0]
    nb = t - t % BLOCK
    for n0 in range(0, nb, BLOCK):
        axpy_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, _NBLOCK_VEC)
    rem = (t - nb) // VEC
    if rem == 1:
        axpy_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 1)
    elif rem == 2:
        axpy_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 2)
    elif rem == 3:
        axpy_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 3)
    elif rem >= 4:
        axpy_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, nb, 4)
        for n0 in range(nb + 4 * VEC, t, VEC):
            axpy_taps(acc, w, vals, idx, ptr, tlo, thi, tbase, ntaps, n0, 1)


@numba.njit(cache=True, fastmath=FAST)
def compact(x, vals, idx):  # pragma: no cover - compiled
    """Write the nonzeros of 1-D ``x`` to ``vals``/``idx``; return their count.

    16 at a time: with :func:`compress16` on AVX-512 hosts, elsewhere by walking the set
    bits of :func:`nonzero_mask16` (both 4-5x faster at 90% sparsity than the branch-free
    scalar pass they replace, 0.85 ns per element on the build machine).
    """
    if HAS_AVX512:
        return _compact_avx512(x, vals, idx)
    return compact_bits(x, vals, idx)


@numba.njit(cache=True, fastmath=FAST)
def _compact_avx512(x, vals, idx):  # pragma: no cover - compiled
    n = x.shape[0]
    nb = n - n % VEC
    c = 0
    for k0 in range(0, nb, VEC):
        c = compress16(x, k0, vals, idx, c)
    return _compact_tail(x, vals, idx, nb, c)


@numba.njit(cache=True, fastmath=FAST)
def _compact_tail(x, vals, idx, start, c):  # pragma: no cover - compiled
    for k in range(start, x.shape[0]):
        v = x[k]
        vals[c] = v
        idx[c] = k
        c += v != 0
    return c


@numba.njit(cache=True, fastmath=FAST)
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


@numba.njit(cache=True, fastmath=FAST)
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


@numba.njit(cache=True, fastmath=FAST)
def padded_bias(bias, total):  # pragma: no cover - compiled
    """``bias`` (N,) or empty, zero-padded to ``total`` >= N floats (every tile's width).

    Built once per kernel call, inside the kernel (a numpy pad in the Python wrapper cost
    1.5 us, 5% of a 90%-sparse 3072x768 GEMV), so :func:`fill_bias` is one fixed loop.
    """
    out = np.zeros(total, dtype=np.float32)
    for j in range(min(total, bias.shape[0])):
        out[j] = bias[j]
    return out


@numba.njit(cache=True, fastmath=FAST)
def fill_bias(acc, bias, n0):  # pragma: no cover - compiled
    """acc[:] = bias[n0 : n0+len(acc)] for a :func:`padded_bias` ``bias``.

    An explicit fixed-length loop: numba's slice assignment (``acc[:w] = bias[n0:n0+w]``)
    cost 60 ns per 128 floats, clamped bounds 25 ns, this 5 ns; per conv pixel that was
    a tenth of the time at 95% sparsity.
    """
    for j in range(acc.shape[0]):
        acc[j] = bias[n0 + j]


@numba.njit(cache=True, fastmath=FAST)
def store_row(acc, out_row, n0, width):  # pragma: no cover - compiled
    """out_row[n0 : n0+width] = acc[:width] (an explicit loop, see :func:`fill_bias`)."""
    for j in range(width):
        out_row[n0 + j] = acc[j]


@numba.njit(cache=True, fastmath=FAST)
def compact_pixels(xc, width, vals, idx, ptr):  # pragma: no cover - compiled
    """xc (C, H*W) -> the nonzeros of every pixel as one CSR list, pixel by pixel.

    Pixel p's nonzeros are vals[ptr[p]:ptr[p+1]] (channels ascending) with
    ``idx = (p % width) * C + channel``: the input column is folded into the index so a
    conv walks a whole kernel row (consecutive input pixels) as one list with one
    weight-row offset (:func:`axpy_taps`). ``ptr`` has H*W+1 entries.

    Two passes: a vectorised count of each pixel's nonzeros, then a fill that walks the
    masks of 4 planes over the same 16 pixels as one 64-bit word (bit 16*i + j: plane
    c+i, pixel p0+j), reading the planes as 4 sequential streams. The walk's loop exit is
    a branch the predictor cannot learn, so one exit per 64 values instead of 16 matters
    (1.3-1.8x on the fill); the packed list keeps the fill's stores and the conv's list
    reads in a few KB instead of C*H*W*8 bytes of per-pixel rows.
    """
    nc, hw = xc.shape
    nb = hw - hw % VEC
    nc4 = nc - nc % 4
    col = np.empty(hw, dtype=np.int32)  # (p % width) * C: no division per entry
    for p in range(hw):
        col[p] = (p % width) * nc
    for p in range(hw + 1):
        ptr[p] = 0
    for c in range(nc):  # count: ptr[p + 1] = nonzeros of pixel p
        plane = xc[c]
        for p in range(hw):
            ptr[p + 1] += plane[p] != 0
    for p in range(hw):  # prefix sum: ptr[p] = start of pixel p; then used as its fill position
        ptr[p + 1] += ptr[p]
    for c in range(0, nc4, 4):
        for p0 in range(0, nb, VEC):
            m = (nonzero_mask16(xc[c], p0) | (nonzero_mask16(xc[c + 1], p0) << 16)
                 | (nonzero_mask16(xc[c + 2], p0) << 32) | (nonzero_mask16(xc[c + 3], p0) << 48))
            while m != 0:
                b = cttz(m)
                ch = c + (b >> 4)
                p = p0 + (b & 15)
                j = ptr[p]
                vals[j] = xc[ch, p]
                idx[j] = col[p] + ch
                ptr[p] = j + 1
                m &= m - 1
    for c in range(nc4, nc):
        for p0 in range(0, nb, VEC):
            m = nonzero_mask16(xc[c], p0)
            while m != 0:
                p = p0 + cttz(m)
                j = ptr[p]
                vals[j] = xc[c, p]
                idx[j] = col[p] + c
                ptr[p] = j + 1
                m &= m - 1
    for c in range(nc):
        for p in range(nb, hw):
            v = xc[c, p]
            if v != 0:
                j = ptr[p]
                vals[j] = v
                idx[j] = col[p] + c
                ptr[p] = j + 1
    for p in range(hw, 0, -1):  # the fill moved each start to the next pixel's start
        ptr[p] = ptr[p - 1]
    ptr[0] = 0


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
