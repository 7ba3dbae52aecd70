"""GridSample (opset 16 and 20) and AffineGrid (opset 20): spatial transformers (OCR rectifiers, STNs).

GridSample reads ``X`` (N, C, d1..dr) at the normalised positions of ``grid`` (N, o1..or, r),
whose last axis lists coordinates fastest-axis first (x = width, then y, then z). Every
spatial axis is resolved on its own into *taps* (input index, weight, in-range flag): one for
``nearest``, two for ``linear``, four for ``cubic`` (Keys, a = -0.75); the output sums the
products of every tap combination, ``taps^r`` terms per output value. Both steps are numba
kernels (:mod:`edge_runtime.kernels.grid_sample`) computing in the input's float type.

Semantics are onnxruntime's (torch's ``grid_sample``): ``align_corners`` maps -1/1 to the
corner pixels' centres (else their outer edges); the taps are taken around the unclamped
coordinate and each tap outside the map reads 0 (``zeros``), the nearest edge pixel
(``border``) or its reflection at the border (``reflection``). For finite inputs this equals
the ONNX reference, which clamps or reflects the coordinate first (except for ``cubic`` with
``border``, where the reference's clamp moves all four taps and no backend case covers it);
taking taps as onnxruntime does also makes a NaN or Inf pixel reach the same outputs.
``nearest`` rounds half to even. Coordinates are computed in the input's float type.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError, InvalidModelError, UnsupportedDTypeError
from edge_runtime.kernels.grid_sample import axis_taps, gather_taps
from edge_runtime.ops.registry import register

Array = NDArray[Any]

_PADDINGS = ("zeros", "border", "reflection")
_MODES_16 = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}
_MODES_20 = ("linear", "nearest", "cubic")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _denormalize(n: Array, size: int, align_corners: bool) -> Array:
    """Normalised [-1, 1] -> pixel coordinates along an axis of ``size``."""
    if align_corners:
        return (n + 1) / 2 * (size - 1)
    return ((n + 1) * size - 1) / 2


def _coords(grid: Array, spatial: tuple[int, ...], mode: str, align_corners: bool) -> list[tuple]:
    """Per spatial axis (d1..dr): (pixel coordinates, size, border low, border high).

    No clamping or reflection here: as in onnxruntime, padding acts on each tap (which also
    decides where a NaN/Inf pixel with a zero weight still reaches the output).
    """
    out = []
    for axis, size in enumerate(spatial):
        coord = _denormalize(grid[..., len(spatial) - 1 - axis], size, align_corners)  # (N, o1..or)
        if mode == "nearest":
            coord = np.rint(coord)
        lo, hi = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        out.append((coord.astype(grid.dtype, copy=False), size, lo, hi))
    return out


def _grid_sample(X: Array, grid: Array, mode: str, padding: str, align_corners: bool) -> Array:
    _check(X, grid, padding)
    n, c, spatial = X.shape[0], X.shape[1], X.shape[2:]
    out_shape = grid.shape[1:-1]
    flat = X.reshape(n, c, -1)                                                         # (N, C, S)
    axes = [axis_taps(coord, size, mode, padding == "reflection", lo, hi)
            for coord, size, lo, hi in _coords(grid.astype(X.dtype, copy=False), spatial, mode, align_corners)]
    strides = np.cumprod((1,) + spatial[::-1])[::-1][1:].astype(np.int64)
    p = int(np.prod(out_shape, dtype=np.int64))
    idx, w, valid = (np.stack([taps[i] for taps in axes]).reshape(len(axes), -1, n, p) for i in range(3))  # (r, T, N, P)
    y = gather_taps(flat, idx, w, valid, strides, padding == "zeros")                  # (N, C, P)
    return y.reshape((n, c) + out_shape)


def _check(X: Array, grid: Array, padding: str) -> None:
    if X.dtype not in _FLOATS:
        raise UnsupportedDTypeError(f"GridSample: X has dtype {X.dtype}; expected float32 or float64. "
                                    "Cast the input to float32.")
    r = X.ndim - 2
    if r < 1 or grid.ndim != X.ndim or grid.shape[0] != X.shape[0] or grid.shape[-1] != r:
        raise InvalidInputError(f"GridSample: X {X.shape} and grid {grid.shape}; expected (N, C, d1..dr) and "
                                f"(N, o1..or, r). Check the grid's producer.")
    if 0 in X.shape[2:]:
        raise InvalidInputError(f"GridSample: X {X.shape} has an empty spatial axis; nothing to sample from.")
    if padding not in _PADDINGS:
        raise InvalidModelError(f"GridSample: padding_mode '{padding}'; expected one of {_PADDINGS}. "
                                "Fix the node's attribute.")


@register("GridSample", since_version=16)
def GridSample_16(X: Array, grid: Array, *, align_corners: int = 0, mode: str = "bilinear",
                  padding_mode: str = "zeros") -> Array:
    """Opset 16: 4-D input, modes ``bilinear``/``nearest``/``bicubic``.

    Returns:
        (N, C, H_out, W_out) in X's dtype.

    Raises:
        InvalidModelError: unknown mode/padding or not 4-D; InvalidInputError: shapes do not fit.
    """
    if mode not in _MODES_16 or X.ndim != 4:
        raise InvalidModelError(f"GridSample (opset 16): mode '{mode}' on a rank-{X.ndim} input; expected a "
                                f"mode in {tuple(_MODES_16)} and (N, C, H, W). Re-export with opset >= 20 for "
                                "other ranks.")
    return _grid_sample(X, grid, _MODES_16[mode], padding_mode, bool(align_corners))


@register("GridSample", since_version=20)
def GridSample(X: Array, grid: Array, *, align_corners: int = 0, mode: str = "linear",
               padding_mode: str = "zeros") -> Array:
    """Opset 20+: any spatial rank, modes ``linear``/``nearest``/``cubic``.

    Returns:
        (N, C, o1..or) in X's dtype.

    Raises:
        InvalidModelError: unknown mode/padding; InvalidInputError: shapes do not fit.
    """
    if mode not in _MODES_20:
        raise InvalidModelError(f"GridSample: mode '{mode}'; expected one of {_MODES_20}. Fix the node's attribute.")
    return _grid_sample(X, grid, mode, padding_mode, bool(align_corners))


@register("AffineGrid", since_version=20)
def AffineGrid(theta: Array, size: Array, *, align_corners: int = 0) -> Array:
    """The sampling grid of affine maps ``theta`` (N, 2, 3) or (N, 3, 4) for an output ``size``.

    Returns:
        (N, H, W, 2) or (N, D, H, W, 3) normalised coordinates, x first, in theta's dtype.

    Raises:
        InvalidInputError: size is not (N, C, H, W) / (N, C, D, H, W) or theta does not match it.
    """
    dims = [int(v) for v in np.asarray(size).reshape(-1)]
    r = len(dims) - 2
    if r not in (2, 3) or theta.shape != (dims[0], r, r + 1):
        raise InvalidInputError(f"AffineGrid: theta {theta.shape} with size {dims}; expected size (N, C, H, W) "
                                "with theta (N, 2, 3), or (N, C, D, H, W) with theta (N, 3, 4).")
    dt = theta.dtype

    def axis(m: int) -> Array:
        if align_corners:
            return np.linspace(-1, 1, m, dtype=dt) if m > 1 else np.zeros(1, dt)
        return ((2 * np.arange(m, dtype=dt) + 1) / m - 1).astype(dt)

    mesh = np.meshgrid(*[axis(m) for m in dims[2:]], indexing="ij")                    # r x (d1..dr)
    base = np.stack([*mesh[::-1], np.ones_like(mesh[0])], axis=-1).reshape(-1, r + 1)  # (P, r+1): x, y[, z], 1
    grid = np.einsum("pk,njk->npj", base, theta)                                        # (N, P, r)
    return grid.reshape([dims[0], *dims[2:], r]).astype(dt, copy=False)
