"""Window geometry shared by convolution, transposed convolution and pooling.

Pads follow ONNX order: ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``.
Every function works for any number of spatial dimensions.
"""
from __future__ import annotations

import math
from typing import Sequence

from edge_runtime.errors import InvalidArgumentError

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def resolve_pads(auto_pad: str, in_spatial: Sequence[int], kernel: Sequence[int],
                 strides: Sequence[int], dilations: Sequence[int],
                 pads: Sequence[int] | None) -> list[int]:
    """Turn ``auto_pad`` / explicit ``pads`` into explicit begin/end pads.

    SAME_* pad so that ``out = ceil(in / stride)``; SAME_UPPER puts the odd extra
    pixel at the end, SAME_LOWER at the beginning (ONNX spec, as onnxruntime does).

    Args:
        auto_pad: one of NOTSET, SAME_UPPER, SAME_LOWER, VALID.
        in_spatial: input spatial sizes.
        kernel: kernel sizes (undilated).
        strides: strides per spatial dim.
        dilations: dilations per spatial dim.
        pads: explicit pads (used only with NOTSET); None means zeros.

    Returns:
        ``2 * len(in_spatial)`` non-negative ints.

    Raises:
        InvalidArgumentError: unknown auto_pad, wrong pads length or negative pads.
    """
    nd = len(in_spatial)
    if auto_pad not in AUTO_PADS:
        raise InvalidArgumentError(
            f"auto_pad={auto_pad!r} is not valid; expected one of {AUTO_PADS}. Fix the model's attribute.")
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad == "NOTSET":
        if pads is None:
            return [0] * (2 * nd)
        pads = [int(p) for p in pads]
        if len(pads) != 2 * nd or min(pads) < 0:
            raise InvalidArgumentError(
                f"pads={pads} is invalid for {nd} spatial dims; expected {2 * nd} non-negative ints "
                f"(begins then ends). Fix the model's 'pads' attribute.")
        return pads
    begins, ends = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def conv_out_spatial(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                     dilations: Sequence[int], pads: Sequence[int],
                     ceil_mode: bool = False) -> list[int]:
    """Output spatial sizes of a sliding window (Conv and pooling).

    With ``ceil_mode`` the last window may start in the end padding region but
    never past it (the rule of onnx's reference evaluator, torch and onnxruntime).

    Raises:
        InvalidArgumentError: the window is larger than the padded input.
    """
    nd = len(in_spatial)
    out = []
    for i in range(nd):
        span = (kernel[i] - 1) * dilations[i] + 1
        padded = in_spatial[i] + pads[i] + pads[nd + i]
        if padded < span:
            raise InvalidArgumentError(
                f"window of span {span} (kernel {kernel[i]}, dilation {dilations[i]}) is larger than the "
                f"padded input size {padded} on spatial axis {i}; expected a smaller kernel or more padding.")
        if ceil_mode:
            o = math.ceil((padded - span) / strides[i]) + 1
            if (o - 1) * strides[i] >= in_spatial[i] + pads[i]:
                o -= 1
        else:
            o = (padded - span) // strides[i] + 1
        out.append(int(o))
    return out


def check_positive(name: str, values: Sequence[int], nd: int) -> list[int]:
    """Validate an int-per-spatial-dim attribute (strides, dilations, kernel_shape).

    Raises:
        InvalidArgumentError: wrong length or a value < 1.
    """
    vals = [int(v) for v in values]
    if len(vals) != nd or min(vals, default=1) < 1:
        raise InvalidArgumentError(
            f"{name}={vals} is invalid; expected {nd} positive ints (one per spatial dim). "
            f"Fix the model's '{name}' attribute.")
    return vals


def conv2d_out(kernel_name: str, x_shape: Sequence[int], channels: int, window: Sequence[int],
               strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int]) -> tuple[int, int]:
    """Check a prepared 2-D conv kernel's call (NCHW input with ``channels`` channels, 2 strides and
    dilations >= 1, 4 pads >= 0) and return its output (OH, OW).

    Raises:
        InvalidInputError: ``x_shape`` is not (N, channels, H, W).
        InvalidArgumentError: bad strides/pads/dilations.
    """
    from edge_runtime.errors import InvalidInputError

    if len(x_shape) != 4 or x_shape[1] != channels:
        raise InvalidInputError(f"{kernel_name}: x has shape {tuple(x_shape)}; expected (N, {channels}, H, W) to "
                                f"match the prepared weights' {channels} input channels.")
    if len(strides) != 2 or len(pads) != 4 or len(dilations) != 2 or min(pads) < 0 \
            or min(*strides, *dilations) < 1:
        raise InvalidArgumentError(f"{kernel_name}: strides={list(strides)}, pads={list(pads)}, dilations="
                                   f"{list(dilations)}; expected 2 positive strides/dilations and 4 pads >= 0.")
    oh, ow = conv_out_spatial(x_shape[2:], window, strides, dilations, pads)
    return oh, ow
