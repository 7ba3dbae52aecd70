"""Zero-skipping MatMul/Gemm kernels: y = act(x @ W + b), skipping zero entries of x.

Public API (the planner/dispatch calls exactly these)::

    prepare_matmul_weights(W_kn) -> PreparedMatmul      # once, at plan time
    sparse_gemv(x, prepared, bias, act, p0, p1, parallel=False) -> (N,)
    sparse_matmul(X, prepared, bias, act, p0, p1, parallel=False) -> (M, N)
    dense_gemv(x, prepared, bias, act, p0, p1, parallel=False) -> (N,)      # same signature
    dense_matmul(X, prepared, bias, act, p0, p1, parallel=False) -> (M, N)  # same signature

Layouts: ``W_kn`` is (K, N) = (in_features, out_features), i.e. ONNX MatMul's B or
``Gemm(transB=0)``'s B; a PyTorch Linear weight (N, K) or ``Gemm(transB=1)`` is passed
as ``W.T``. ``prepare_matmul_weights`` copies it once into a C-contiguous float32
array so each weight row ``W[k]`` is one contiguous run of N floats. ``bias`` is
(N,) or None, added before the activation. ``act, p0, p1`` are the fused activation
codes of :mod:`edge_runtime.kernels.activation` (NONE, RELU, CLIP, LEAKY_RELU,
THRESHOLD_RELU). Inputs of any float dtype or memory layout are accepted; the thin
Python wrappers make them contiguous float32 (a copy only when needed). Outputs are
new C-contiguous float32 arrays.

How the sparse kernels work (docs/sparse_kernels.md has the figures):

* GEMV: scan x once, compacting (value, index) of its nonzeros 16 at a time; then
  accumulate only the matching weight rows into blocks of output floats held in
  registers (:func:`edge_runtime.kernels.sparse_common.axpy_rows`: explicit 16-float
  vectors, 8 zmm with AVX-512). With an untiled layout (``tile_n >= N``, what the
  dispatcher prepares for Gemm, whose rows are a batch and usually 1 on a device) the
  nonzero rows are swept start to end in groups of ``GEMV_GROUP``, which streams from
  memory 1.6x faster than visiting one 128-column chunk of every row per tile.
  Cost ~ nnz(x) * N.
* MatMul (M rows, e.g. 197 ViT tokens): compact every row into one flat CSR list, then for each column tile
  of W (``PreparedMatmul.tile_n`` columns, sized so the tile stays in L2) run every row
  over its own nonzeros. Rows cannot share weight loads because each has its own zero
  pattern, hence the higher break-even density than GEMV.

``parallel=True`` uses numba ``prange`` (over column tiles for GEMV, over blocks of
rows for MatMul) with ``numba.get_num_threads()`` threads; set that with
``numba.set_num_threads(n)`` (or :func:`set_threads`). Use it only for large layers:
below ~8 MFLOP of *effective* work (density * M * K * N * 2) the fork/join and
spin-wait costs of a shared machine eat the gain (references §2).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange
from numpy.typing import ArrayLike, NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.kernels.activation import apply_activation
from edge_runtime.kernels.fastmath import FAST
from edge_runtime.kernels.sparse_common import (
    BLOCK,
    VEC,
    accumulate,
    activate,
    aligned_empty,
    axpy_rows,
    compact,
    fill_bias,
    padded_bias,
    store_row,
    workspace,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PreparedMatmul",
    "prepare_matmul_weights",
    "sparse_gemv",
    "sparse_matmul",
    "dense_gemv",
    "dense_matmul",
    "set_threads",
    "PARALLEL_MIN_FLOPS",
    "DEFAULT_TILE_N",
]

#: Suggested threshold for ``parallel=True``: effective FLOPs (density*M*K*N*2) per call.
PARALLEL_MIN_FLOPS = 8e6
#: Default column tile width of :class:`PreparedMatmul` (a 3072 x 128 tile is 1.5 MB).
DEFAULT_TILE_N = 128
_EMPTY_BIAS = np.zeros(0, dtype=np.float32)
#: Bytes of one (K-block x column tile) block of W in the token-batched kernel: it must stay
#: in L2 (2 MB on the build machine, 1 MB per core on Cortex-A76, 512 KB on A72) together
#: with the rows' nonzero lists; 768 KB beat 1.5 MB whole tiles by 1.2-1.35x there.
KBLOCK_BYTES = 768 * 1024
#: Nonzero rows per sweep of the untiled GEMV (8-16 were best for 3072x768 and 4096x4096).
GEMV_GROUP = 16
_NB = BLOCK // VEC


@dataclass(frozen=True)
class PreparedMatmul:
    """Weights laid out for the MatMul kernels: (K, N) split into column tiles.

    Attributes:
        wt: (ntiles, K, T) C-contiguous float32; ``wt[t, k, j] == W[k, t*T + j]``, the
            last tile zero-padded. Each tile row is T contiguous floats and a whole
            tile (K*T*4 bytes) is contiguous, so it stays in L2 while all rows use it.
        n: number of output features N (the padding is never returned).

    Example:
        >>> p = prepare_matmul_weights(np.ones((4, 3), dtype=np.float32))
        >>> (p.k, p.n, p.tile_n)
        (4, 3, 16)
    """

    wt: NDArray[np.float32]
    n: int

    @property
    def k(self) -> int:
        """Number of input features K."""
        return int(self.wt.shape[1])

    @property
    def tile_n(self) -> int:
        """Column tile width T."""
        return int(self.wt.shape[2])

    def dense(self) -> NDArray[np.float32]:
        """Return the (K, N) weight matrix (a new array)."""
        ntiles, k, t = self.wt.shape
        return self.wt.transpose(1, 0, 2).reshape(k, ntiles * t)[:, : self.n].copy()


def prepare_matmul_weights(w_kn: ArrayLike, tile_n: int | None = None) -> PreparedMatmul:
    """Copy a (K, N) weight matrix once into the tiled layout the kernels read.

    Args:
        w_kn: (K, N) weights (pass a PyTorch Linear weight or Gemm transB=1 B as ``W.T``).
        tile_n: column tile width T, rounded up to a multiple of 16; default
            ``DEFAULT_TILE_N`` (128, the fastest of 32..768 for 197x3072 @ 3072x768 on
            the build machine), capped at N rounded up to 16.

    Returns:
        A :class:`PreparedMatmul` holding a float32 copy, (ntiles, K, T).

    Raises:
        InvalidArgumentError: if ``w_kn`` is not 2-D or ``tile_n`` is not positive.
    """
    w = np.asarray(w_kn, dtype=np.float32)
    if w.ndim != 2:
        raise InvalidArgumentError(
            f"prepare_matmul_weights expects a 2-D (K, N) matrix, got shape {w.shape}; "
            "reshape or transpose the weight first"
        )
    tile = DEFAULT_TILE_N if tile_n is None else int(tile_n)
    if tile <= 0:
        raise InvalidArgumentError(f"tile_n must be a positive int, got {tile_n}")
    k, n = w.shape
    tile = min(-(-tile // 16) * 16, max(16, -(-n // 16) * 16))
    ntiles = max(1, -(-n // tile))
    wt = aligned_empty((ntiles, k, tile))
    for t in range(ntiles):
        width = min(tile, n - t * tile)
        _copy(wt[t, :, :width], w[:, t * tile:(t + 1) * tile])
        wt[t, :, width:] = 0.0  # only the padding: zeroing it all first wrote 64 MB twice
    return PreparedMatmul(wt=wt, n=int(n))


#: Square block side for copying a transposed weight (a Gemm's ``B.T`` view): numpy copies a
#: transposed 4096 x 4096 float32 matrix in 0.15 s element by element, in 64 x 64 blocks (which
#: stay in L1) in 0.04 s (Intel Xeon, 2026-12-05).
_COPY_BLOCK = 64


def _copy(dst: NDArray[np.float32], src: NDArray[np.float32]) -> None:
    if src.flags.c_contiguous or min(src.shape) <= _COPY_BLOCK:
        dst[...] = src
        return
    b = _COPY_BLOCK
    for i in range(0, src.shape[0], b):
        for j in range(0, src.shape[1], b):
            dst[i:i + b, j:j + b] = src[i:i + b, j:j + b]


def set_threads(n: int) -> None:
    """Set the thread count of the ``parallel=True`` kernels (``numba.set_num_threads``).

    Args:
        n: threads, 1..numba.config.NUMBA_NUM_THREADS.

    Raises:
        InvalidArgumentError: if ``n`` is out of range.
    """
    top = numba.config.NUMBA_NUM_THREADS
    if not 1 <= int(n) <= top:
        raise InvalidArgumentError(f"thread count must be in 1..{top}, got {n}")
    numba.set_num_threads(int(n))


# ----------------------------------------------------------------------------- numba


# The numba kernels below pad ``bias`` to ntiles*T once per call (:func:`padded_bias`).
# Shared helpers; ``_activate``/``_compact`` keep their old names for existing importers.
_activate = activate
_compact = compact


@numba.njit(cache=True, fastmath=FAST)
def _tile_row(vals, idx, i0, i1, wt, bias, act, p0, p1, acc, out_row, tile):  # pragma: no cover
    """out_row[tile*T : tile*T+T] = act(bias + row @ W) for one column tile.

    ``vals[i0:i1]``/``idx[i0:i1]`` are the row's nonzeros; ``acc`` is a T-float scratch.
    """
    t = acc.shape[0]
    n0 = tile * t
    fill_bias(acc, bias, n0)
    accumulate(acc, wt[tile], vals, idx, i0, i1, 0)
    activate(acc, act, p0, p1)
    store_row(acc, out_row, n0, min(t, out_row.shape[0] - n0))


@numba.njit(cache=True, fastmath=FAST)
def _gemv_rows_range(vals, idx, c, w, acc, n0, n1):  # pragma: no cover - compiled
    """acc[n0:n1] += sum_{i<c} vals[i] * w[idx[i], n0:n1] for an untiled (K, T) ``w``.

    Nonzeros go in groups of ``GEMV_GROUP``; each group sweeps its weight rows from start
    to end, so memory sees a few long sequential streams (the prefetchers' best case)
    instead of one short chunk per row and column tile: 1.6x faster at density 0.1.
    """
    span = n1 - n0
    nb = n0 + span - span % BLOCK
    for g in range(0, c, GEMV_GROUP):
        g1 = min(c, g + GEMV_GROUP)
        for b0 in range(n0, nb, BLOCK):
            axpy_rows(acc, w, vals, idx, g, g1, 0, b0, _NB)
        for b0 in range(nb, n1, VEC):
            axpy_rows(acc, w, vals, idx, g, g1, 0, b0, 1)


@numba.njit(cache=True, fastmath=FAST)
def _gemv_untiled(x, wt, bias, act, p0, p1, out):  # pragma: no cover - compiled
    bias = padded_bias(bias, wt.shape[0] * wt.shape[2])
    vals = np.empty(x.shape[0], dtype=np.float32)
    idx = np.empty(x.shape[0], dtype=np.int32)
    c = compact(x, vals, idx)
    t = wt.shape[2]
    n = out.shape[0]
    acc = np.empty(t, dtype=np.float32)
    fill_bias(acc, bias, 0)
    _gemv_rows_range(vals, idx, c, wt[0], acc, 0, t)
    activate(acc, act, p0, p1)
    out[:] = acc[:n]


@numba.njit(cache=True, fastmath=FAST)
def _gemv_kernel(x, wt, bias, act, p0, p1, out):  # pragma: no cover - compiled
    if wt.shape[0] == 1:
        _gemv_untiled(x, wt, bias, act, p0, p1, out)
        return
    bias = padded_bias(bias, wt.shape[0] * wt.shape[2])
    vals = np.empty(x.shape[0], dtype=np.float32)
    idx = np.empty(x.shape[0], dtype=np.int32)
    c = compact(x, vals, idx)
    acc = np.empty(wt.shape[2], dtype=np.float32)
    for tile in range(wt.shape[0]):
        _tile_row(vals, idx, 0, c, wt, bias, act, p0, p1, acc, out, tile)


@numba.njit(cache=True, fastmath=FAST, parallel=True)
def _gemv_kernel_par(x, wt, bias, act, p0, p1, out, chunk):  # pragma: no cover - compiled
    bias = padded_bias(bias, wt.shape[0] * wt.shape[2])
    vals = np.empty(x.shape[0], dtype=np.float32)
    idx = np.empty(x.shape[0], dtype=np.int32)
    c = compact(x, vals, idx)
    if wt.shape[0] == 1:
        t = wt.shape[2]
        n = out.shape[0]
        acc = np.empty(t, dtype=np.float32)
        fill_bias(acc, bias, 0)
        nchunks = (t + chunk - 1) // chunk
        for ch in prange(nchunks):
            _gemv_rows_range(vals, idx, c, wt[0], acc, ch * chunk, min(t, (ch + 1) * chunk))
        activate(acc, act, p0, p1)
        out[:] = acc[:n]
        return
    for tile in prange(wt.shape[0]):
        acc = np.empty(wt.shape[2], dtype=np.float32)
        _tile_row(vals, idx, 0, c, wt, bias, act, p0, p1, acc, out, tile)


@numba.njit(cache=True, fastmath=FAST)
def _gemm_rows(x, wt, bias, act, p0, p1, out, m0, m1, vals, idx, ptr, scratch, kblock):  # pragma: no cover
    """Rows m0..m1 of out = act(x @ W + b): compact the rows, then block by block of W.

    Each row's nonzeros are compacted per K-block of ``kblock`` rows of W into one flat
    CSR list (``ptr[r*KB + kb] : ptr[r*KB + kb + 1]`` in ``vals``/``idx``, indices relative
    to the block), so only the nonzeros' memory is touched. W is then visited one
    (K-block x column tile) block at a time, every row running over its own nonzeros in
    it, accumulating in ``scratch`` (rows, T). A block of ``kblock`` x T floats (~768 KB)
    stays in L2 next to the lists and the accumulators; whole 1.5 MB column tiles did not
    (1.2-1.35x slower at 90-95% sparsity on 197x3072 @ 3072x768).
    """
    k = x.shape[1]
    rows = m1 - m0
    nkb = (k + kblock - 1) // kblock
    bias = padded_bias(bias, wt.shape[0] * wt.shape[2])
    c = 0
    for r in range(rows):
        for kb in range(nkb):
            ptr[r * nkb + kb] = c
            c += compact(x[m0 + r, kb * kblock:min(k, (kb + 1) * kblock)], vals[c:], idx[c:])
    ptr[rows * nkb] = c
    ntiles, _, t = wt.shape
    n = out.shape[1]
    for tile in range(ntiles):
        n0 = tile * t
        width = min(t, n - n0)
        w = wt[tile]
        for kb in range(nkb):
            for r in range(rows):
                acc = scratch[r]
                if kb == 0:
                    fill_bias(acc, bias, n0)
                j = r * nkb + kb
                accumulate(acc, w, vals, idx, ptr[j], ptr[j + 1], kb * kblock)
        for r in range(rows):
            acc = scratch[r]
            activate(acc, act, p0, p1)
            store_row(acc, out[m0 + r], n0, width)


@numba.njit(cache=True, fastmath=FAST)
def _gemm_kernel(x, wt, bias, act, p0, p1, out):  # pragma: no cover - compiled
    """out = act(x @ W + b) for all M rows on one thread, with its own scratch (the entry point the
    kernels compiled ahead of time export: :mod:`edge_runtime.engine.aot`)."""
    m, k = x.shape
    t = wt.shape[2]
    kblock = max(1, min(k, KBLOCK_BYTES // (4 * t)))
    nkb = (k + kblock - 1) // kblock
    vals = np.empty(m * k, dtype=np.float32)
    idx = np.empty(m * k, dtype=np.int32)
    ptr = np.empty(m * nkb + 1, dtype=np.int64)
    scratch = np.empty((m, t), dtype=np.float32)
    _gemm_rows(x, wt, bias, act, p0, p1, out, 0, m, vals, idx, ptr, scratch, kblock)


@numba.njit(cache=True, fastmath=FAST, parallel=True)
def _gemm_kernel_par(x, wt, bias, act, p0, p1, out, block, vals, idx, ptr, scratch, kblock):  # pragma: no cover
    m, k = x.shape
    nkb = (k + kblock - 1) // kblock
    nblocks = (m + block - 1) // block
    for b in prange(nblocks):
        m0 = b * block
        m1 = min(m, m0 + block)
        _gemm_rows(x, wt, bias, act, p0, p1, out, m0, m1, vals[m0 * k:m1 * k],
                   idx[m0 * k:m1 * k], ptr[m0 * nkb + b:m1 * nkb + b + 1], scratch[m0:m1], kblock)


# ----------------------------------------------------------------------------- wrappers


def _bias_array(bias: ArrayLike | None, n: int) -> NDArray[np.float32]:
    """Return bias as contiguous float32 (N,), or an empty array for None."""
    if bias is None:
        return _EMPTY_BIAS
    b = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    if b.shape[0] != n:
        raise InvalidInputError(f"bias has {b.shape[0]} elements, expected N={n} (one per output feature)")
    return b


def _check_act(act: int) -> None:
    if act not in (0, 1, 2, 3, 4):
        raise InvalidArgumentError(
            f"unknown fused activation code {act}; expected one of NONE=0, RELU=1, CLIP=2, "
            "LEAKY_RELU=3, THRESHOLD_RELU=4 (edge_runtime.kernels.activation)"
        )


def _as_input(x: ArrayLike, ndim: int, k: int, name: str) -> NDArray[np.float32]:
    """Validate rank and K, return a C-contiguous float32 view or copy."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != ndim or a.shape[-1] != k:
        want = "(K,)" if ndim == 1 else "(M, K)"
        raise InvalidInputError(f"{name}: input shape {a.shape} does not match {want} with K={k}")
    return a


def sparse_gemv(
    x: ArrayLike, prepared: PreparedMatmul, bias: ArrayLike | None, act: int = 0,
    p0: float = 0.0, p1: float = 0.0, parallel: bool = False,
) -> NDArray[np.float32]:
    """y = act(x @ W + b) for one input row, skipping zero entries of x.

    Args:
        x: (K,) input row (any float dtype / layout).
        prepared: weights from :func:`prepare_matmul_weights`.
        bias: (N,) or None; added before the activation.
        act, p0, p1: fused activation code and parameters.
        parallel: split the N outputs over ``numba.get_num_threads()`` threads.

    Returns:
        (N,) float32.

    Raises:
        InvalidInputError: on a shape mismatch. InvalidArgumentError: unknown ``act``.
    """
    _check_act(act)
    xa = _as_input(x, 1, prepared.k, "sparse_gemv")
    b = _bias_array(bias, prepared.n)
    out = np.empty(prepared.n, dtype=np.float32)
    if parallel:
        # column chunks: multiples of the register block, two per thread
        per = -(-prepared.wt.shape[2] // (2 * max(1, numba.get_num_threads())))
        chunk = max(BLOCK, -(-per // BLOCK) * BLOCK)
        _gemv_kernel_par(xa, prepared.wt, b, act, float(p0), float(p1), out, chunk)
    else:
        _gemv_kernel(xa, prepared.wt, b, act, float(p0), float(p1), out)
    return out


def sparse_matmul(
    x: ArrayLike, prepared: PreparedMatmul, bias: ArrayLike | None, act: int = 0,
    p0: float = 0.0, p1: float = 0.0, parallel: bool = False,
) -> NDArray[np.float32]:
    """Y = act(X @ W + b) for M rows, each row skipping its own zero entries.

    Args:
        x: (M, K) input (tokens or batch; any float dtype / layout).
        prepared: weights from :func:`prepare_matmul_weights`.
        bias: (N,) or None; added before the activation.
        act, p0, p1: fused activation code and parameters.
        parallel: split blocks of rows over ``numba.get_num_threads()`` threads.

    Returns:
        (M, N) float32.

    Raises:
        InvalidInputError: on a shape mismatch. InvalidArgumentError: unknown ``act``.
    """
    _check_act(act)
    xa = _as_input(x, 2, prepared.k, "sparse_matmul")
    b = _bias_array(bias, prepared.n)
    m, k = xa.shape
    t = prepared.tile_n
    kblock = max(1, min(k, KBLOCK_BYTES // (4 * t)))
    nkb = -(-k // kblock)
    out = np.empty((m, prepared.n), dtype=np.float32)
    vals = workspace("matmul_vals", m * k, np.float32)
    idx = workspace("matmul_idx", m * k, np.int32)
    scratch = workspace("matmul_acc", m * t, np.float32).reshape(m, t)
    if parallel:
        block = max(1, min(16, -(-m // max(1, numba.get_num_threads()))))
        ptr = workspace("matmul_ptr", m * nkb + -(-m // block) + 1, np.int64)
        _gemm_kernel_par(xa, prepared.wt, b, act, float(p0), float(p1), out, block, vals, idx, ptr,
                         scratch, kblock)
    else:
        ptr = workspace("matmul_ptr", m * nkb + 1, np.int64)
        _gemm_rows(xa, prepared.wt, b, act, float(p0), float(p1), out, 0, m, vals, idx, ptr, scratch, kblock)
    return out


def dense_matmul(
    x: ArrayLike, prepared: PreparedMatmul, bias: ArrayLike | None, act: int = 0,
    p0: float = 0.0, p1: float = 0.0, parallel: bool = False,
) -> NDArray[np.float32]:
    """Dense counterpart of :func:`sparse_matmul` (numpy BLAS), same signature.

    ``parallel`` is accepted for signature compatibility; BLAS threading is set by the
    BLAS library (threadpoolctl / OPENBLAS_NUM_THREADS), not here.

    Returns:
        (M, N) float32 = act(X @ W + b).

    Raises:
        InvalidInputError: on a shape mismatch. InvalidArgumentError: unknown ``act``.
    """
    _check_act(act)
    xa = _as_input(x, 2, prepared.k, "dense_matmul")
    b = _bias_array(bias, prepared.n)
    ntiles, _, t = prepared.wt.shape
    if ntiles == 1:
        y = xa @ prepared.wt[0]
    else:
        y = np.matmul(xa, prepared.wt).transpose(1, 0, 2).reshape(xa.shape[0], ntiles * t)
    y = np.ascontiguousarray(y[:, : prepared.n])
    if b.shape[0]:
        y += b
    return apply_activation(y, act, p0, p1)


def dense_gemv(
    x: ArrayLike, prepared: PreparedMatmul, bias: ArrayLike | None, act: int = 0,
    p0: float = 0.0, p1: float = 0.0, parallel: bool = False,
) -> NDArray[np.float32]:
    """Dense counterpart of :func:`sparse_gemv` (numpy BLAS), same signature.

    Returns:
        (N,) float32 = act(x @ W + b).

    Raises:
        InvalidInputError: on a shape mismatch. InvalidArgumentError: unknown ``act``.
    """
    xa = _as_input(x, 1, prepared.k, "dense_gemv")
    return dense_matmul(xa[None, :], prepared, bias, act, p0, p1)[0]
