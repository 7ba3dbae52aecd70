"""The weight layout the zero-skipping conv kernel reads (numba-free).

:mod:`edge_runtime.kernels.sparse_conv` runs the kernel and re-exports these; the compiled conv
islands (:mod:`edge_runtime.engine.compiled_conv`) build the same layout without loading numba.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.resources import aligned_empty

#: The widest Cout tile (T) of the layout.
_MAX_TILE = 128


@dataclass(frozen=True)
class PreparedConv:
    """Conv weights laid out for the sparse kernel.

    Attributes:
        wt: (ntiles, KH*KW, Cin, T) C-contiguous float32;
            ``wt[t, kh*KW + kw, c, j] == W_oihw[t*T + j, c, kh, kw]`` (zero past Cout).
        cout, cin, kh, kw: the original ONNX weight shape (Cout, Cin, KH, KW).

    Example:
        >>> p = prepare_conv_weights(np.ones((8, 3, 3, 3), dtype=np.float32))
        >>> p.wt.shape
        (1, 9, 3, 16)
    """

    wt: NDArray[np.float32]
    cout: int
    cin: int
    kh: int
    kw: int


def prepare_conv_weights(w_oihw: ArrayLike, tile: int | None = None) -> PreparedConv:
    """Copy ONNX Conv weights (Cout, Cin, KH, KW) once into the kernel layout.

    Args:
        w_oihw: weights of a groups=1 Conv.
        tile: Cout tile width (rounded up to 16); default min(128, Cout rounded up to 16).

    Returns:
        A :class:`PreparedConv`.

    Raises:
        InvalidArgumentError: if the weight is not 4-D or ``tile`` is not positive.
    """
    w = np.asarray(w_oihw, dtype=np.float32)
    if w.ndim != 4:
        raise InvalidArgumentError(
            f"prepare_conv_weights expects (Cout, Cin, KH, KW), got shape {w.shape}"
        )
    if tile is not None and tile <= 0:
        raise InvalidArgumentError(f"tile must be a positive int, got {tile}")
    cout, cin, kh, kw = w.shape
    t = _MAX_TILE if tile is None else int(tile)
    t = min(-(-t // 16) * 16, max(16, -(-cout // 16) * 16))
    ntiles = max(1, -(-cout // t))
    padded = np.zeros((ntiles * t, cin, kh, kw), dtype=np.float32)
    padded[:cout] = w
    # (ntiles, T, Cin, KH, KW) -> (ntiles, KH, KW, Cin, T)
    wt = aligned_empty((ntiles, kh, kw, cin, t))
    wt[...] = padded.reshape(ntiles, t, cin, kh, kw).transpose(0, 3, 4, 2, 1)
    wt = wt.reshape(ntiles, kh * kw, cin, t)
    return PreparedConv(wt=wt, cout=int(cout), cin=int(cin), kh=int(kh), kw=int(kw))


def conv_output_shape(
    x_shape: Sequence[int], prepared: PreparedConv, strides: Sequence[int],
    pads: Sequence[int], dilations: Sequence[int],
) -> tuple[int, int, int, int]:
    """Return (N, Cout, OH, OW) of the convolution, validating every argument.

    Raises:
        InvalidInputError: wrong input rank / channels, or an empty output.
        InvalidArgumentError: strides, pads or dilations of the wrong length or value.
    """
    if len(x_shape) != 4 or x_shape[1] != prepared.cin:
        raise InvalidInputError(
            f"conv input shape {tuple(x_shape)} does not match (N, Cin={prepared.cin}, H, W)"
        )
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        raise InvalidArgumentError(
            f"expected strides (sh, sw), dilations (dh, dw), pads (top, left, bottom, right); "
            f"got {tuple(strides)}, {tuple(dilations)}, {tuple(pads)}"
        )
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise InvalidArgumentError(
            f"strides and dilations must be >= 1 and pads >= 0; got {tuple(strides)}, "
            f"{tuple(dilations)}, {tuple(pads)}"
        )
    n, _, h, w = x_shape
    oh = (h + pads[0] + pads[2] - dilations[0] * (prepared.kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (prepared.kw - 1) - 1) // strides[1] + 1
    if oh <= 0 or ow <= 0:
        raise InvalidInputError(
            f"conv output would be empty ({oh}x{ow}) for input {h}x{w}, kernel "
            f"{prepared.kh}x{prepared.kw}, pads {tuple(pads)}, dilations {tuple(dilations)}"
        )
    return int(n), prepared.cout, int(oh), int(ow)
