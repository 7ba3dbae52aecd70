"""Dense transposed convolution (ConvTranspose): sgemm to columns, then col2im.

API::

    prep = prepare_conv_transpose(W, group)      # W: (Cin, Cout/group, *kernel)
    y = dense_conv_transpose(x, prep, bias, strides, dilations, pads_begin, out_spatial)

Per image and group, ``cols = W_g^T (Cout/g * prod(k), Cin/g) @ x_g (Cin/g, prod(in))``;
each kernel tap's block of ``cols`` is then added into a strided view of the output
(col2im), where output index ``o = i * stride + k * dilation - pad_begin`` and
outputs outside the full range stay zero (that is how ``output_padding`` and a larger
``output_shape`` materialise). When kernel == stride, dilation 1 and no cropping (the
U-Net 2x2 stride-2 upsampling), the taps do not overlap and col2im is a single
transpose copy. Works for any number of spatial dims.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError


@dataclass(frozen=True)
class PreparedConvTranspose:
    """ConvTranspose weights as (group, Cout/g * prod(kernel), Cin/g) float32.

    Example:
        >>> p = prepare_conv_transpose(np.ones((4, 2, 2, 2), np.float32), group=1)
        >>> p.weight.shape
        (1, 8, 4)
    """

    weight: NDArray[np.float32]
    kernel_shape: tuple[int, ...]
    group: int
    in_channels: int
    out_channels: int


def prepare_conv_transpose(w: NDArray[np.floating], group: int = 1) -> PreparedConvTranspose:
    """Re-lay out ONNX ConvTranspose weights (Cin, Cout/group, *kernel).

    Raises:
        InvalidInputError: rank < 3 or Cin not divisible by group.
    """
    w = np.asarray(w)
    if w.ndim < 3 or group < 1 or w.shape[0] % group != 0:
        raise InvalidInputError(
            f"ConvTranspose weight of shape {w.shape} with group={group} is invalid; expected "
            f"(Cin, Cout/group, *kernel) with Cin divisible by group. Fix the model's weights.")
    cin, cout_g = int(w.shape[0]), int(w.shape[1])
    kernel = tuple(int(k) for k in w.shape[2:])
    w32 = np.asarray(w, dtype=np.float32).reshape(group, cin // group, -1)
    packed = np.ascontiguousarray(w32.transpose(0, 2, 1))  # (g, Cout/g * K, Cin/g)
    return PreparedConvTranspose(packed, kernel, group, cin, cout_g * group)


def full_out_spatial(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                     dilations: Sequence[int]) -> list[int]:
    """Size of the uncropped output: ``s * (in - 1) + (k - 1) * d + 1`` per dim."""
    return [s * (n - 1) + (k - 1) * d + 1 for n, k, s, d in zip(in_spatial, kernel, strides, dilations)]


def _tap_slices(tap, in_sp, out_sp, strides, dilations, pads_begin):
    """(output slices, input slices) where tap ``tap`` lands inside the output, or None."""
    out_sl, in_sl = [], []
    for k, n_in, n_out, s, d, pb in zip(tap, in_sp, out_sp, strides, dilations, pads_begin):
        off = k * d - pb                       # o = i * s + off
        i_lo = max(0, (s - 1 - off) // s)     # first i with o >= 0
        i_hi = min(n_in, (n_out - 1 - off) // s + 1) if n_out - 1 - off >= 0 else 0
        if i_hi <= i_lo:
            return None
        o_lo = i_lo * s + off
        out_sl.append(slice(o_lo, o_lo + (i_hi - i_lo - 1) * s + 1, s))
        in_sl.append(slice(i_lo, i_hi))
    return tuple(out_sl), tuple(in_sl)


def _col2im(cols: NDArray[np.float32], y: NDArray[np.float32], kernel, in_sp, strides, dilations,
            pads_begin) -> None:
    """Accumulate cols (C, prod(k), *in_sp) into y (C, *out_sp)."""
    out_sp = y.shape[1:]
    for t, tap in enumerate(itertools.product(*[range(k) for k in kernel])):
        sl = _tap_slices(tap, in_sp, out_sp, strides, dilations, pads_begin)
        if sl is not None:
            y[(slice(None),) + sl[0]] += cols[(slice(None), t) + sl[1]]


def dense_conv_transpose(x: NDArray[np.float32], prep: PreparedConvTranspose,
                         bias: NDArray[np.float32] | None, strides: Sequence[int],
                         dilations: Sequence[int], pads_begin: Sequence[int],
                         out_spatial: Sequence[int]) -> NDArray[np.float32]:
    """Transposed convolution with explicit begin pads and output size.

    Args:
        x: (N, Cin, *in_spatial) float32.
        prep: from :func:`prepare_conv_transpose`.
        bias: (Cout,) or None.
        strides, dilations: per spatial dim.
        pads_begin: output index o maps to full index o + pads_begin.
        out_spatial: output spatial sizes.

    Returns:
        (N, Cout, *out_spatial) float32.

    Raises:
        InvalidInputError: x does not match the weights.
    """
    nd = len(prep.kernel_shape)
    if x.ndim != nd + 2 or x.shape[1] != prep.in_channels:
        raise InvalidInputError(
            f"ConvTranspose input of shape {x.shape} does not match weights: expected (N, "
            f"{prep.in_channels}, <{nd} spatial dims>). Check the producer of this tensor.")
    x = np.ascontiguousarray(x, dtype=np.float32)
    in_sp = x.shape[2:]
    g_n, cin_g = prep.group, prep.in_channels // prep.group
    cout_g = prep.out_channels // g_n
    kernel = prep.kernel_shape
    direct = (list(kernel) == list(strides) and all(d == 1 for d in dilations) and not any(pads_begin)
              and [n * k for n, k in zip(in_sp, kernel)] == list(out_spatial))
    y = np.empty((x.shape[0], prep.out_channels, *out_spatial), np.float32)
    if not direct:
        y[...] = 0.0
    for n in range(x.shape[0]):
        for g in range(g_n):
            xg = x[n, g * cin_g:(g + 1) * cin_g].reshape(cin_g, -1)
            cols = (prep.weight[g] @ xg).reshape(cout_g, -1, *in_sp)
            yg = y[n, g * cout_g:(g + 1) * cout_g]
            if direct:  # (C, k1..kd, n1..nd) -> (C, n1, k1, ..., nd, kd)
                c5 = cols.reshape(cout_g, *kernel, *in_sp)
                order = [0] + [a for i in range(nd) for a in (1 + nd + i, 1 + i)]
                yg[...] = c5.transpose(order).reshape(yg.shape)
            else:
                _col2im(cols, yg, kernel, in_sp, strides, dilations, pads_begin)
    if bias is not None:
        y += np.asarray(bias, np.float32).reshape((1, -1) + (1,) * nd)
    return y
