"""Conv, FusedConv (internal: Conv + activation epilogue) and ConvTranspose.

The plain functions prepare the weights on every call. With constant weights the planner
prepares them once instead: a Conv's prepared layer (``ops/conv_layer.py``), a ConvTranspose's
builder; both cache the resolved padding per input shape, so a run is one kernel call.
:class:`ConvAttrs` is the one parse of a Conv's attributes. Kernels: kernels/conv.py,
kernels/depthwise.py, kernels/conv_transpose.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError, UnsupportedDTypeError
from edge_runtime.kernels.conv import PreparedConv, dense_conv, prepare_conv
from edge_runtime.kernels.conv_transpose import (PreparedConvTranspose, dense_conv_transpose,
                                                 full_out_spatial, prepare_conv_transpose)
from edge_runtime.kernels.geometry import check_positive, conv_out_spatial, resolve_pads
from edge_runtime.ops.registry import INTERNAL_DOMAIN, register, register_builder

Array = NDArray[Any]


def _float32(op: str, x: Array) -> Array:
    """x as float32 (float16/float64 are computed in float32 and cast back by the caller).

    Raises:
        UnsupportedDTypeError: x is not a floating-point tensor.
    """
    if not np.issubdtype(x.dtype, np.floating):
        raise UnsupportedDTypeError(
            f"{op} input has dtype {x.dtype}; edge_runtime computes {op} in float16/float32/float64 only. "
            f"Cast the input to float32 or quantise-dequantise the model.")
    return np.asarray(x, np.float32)


def _window(op: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], dilations: Any, kernel_shape: Any,
            strides: Any) -> tuple[list[int], list[int], list[int]]:
    """Validated (kernel, strides, dilations) shared by Conv and ConvTranspose.

    Raises:
        InvalidInputError: the input's rank does not fit the weights.
        InvalidArgumentError: kernel_shape disagrees with the weights, or bad strides/dilations.
    """
    nd = len(w_shape) - 2
    if len(x_shape) != nd + 2:
        raise InvalidInputError(
            f"{op} input has shape {x_shape} (rank {len(x_shape)}) but the weights {w_shape} need rank "
            f"{nd + 2} (N, C, <{nd} spatial dims>). Check the producer of this tensor.")
    kernel = list(w_shape[2:])
    if kernel_shape is not None and [int(k) for k in kernel_shape] != kernel:
        raise InvalidArgumentError(
            f"{op} kernel_shape={list(kernel_shape)} does not match the weight's spatial shape {kernel}; "
            f"expected them equal. Fix or drop the model's kernel_shape attribute.")
    strides = check_positive("strides", strides if strides is not None else [1] * nd, nd)
    dilations = check_positive("dilations", dilations if dilations is not None else [1] * nd, nd)
    return kernel, strides, dilations


@dataclass(frozen=True)
class ConvAttrs:
    """A Conv's attributes, parsed once (None: absent, the spec's default applies).

    Validation needs the input's shape (its rank, SAME padding), so :meth:`geometry` validates,
    once per input shape, with the errors of the plain op.

    Example:
        >>> a = ConvAttrs.from_attrs({"pads": [1, 1, 1, 1], "strides": [2, 2]})
        >>> a.geometry((1, 3, 8, 8), (4, 3, 3, 3))
        ([2, 2], [1, 1, 1, 1], [1, 1])
    """

    auto_pad: str = "NOTSET"
    dilations: tuple[int, ...] | None = None
    group: int = 1
    kernel_shape: tuple[int, ...] | None = None
    pads: tuple[int, ...] | None = None
    strides: tuple[int, ...] | None = None

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ConvAttrs:
        """From a node's attributes (or the plain op's keyword arguments)."""
        def ints(name: str) -> tuple[int, ...] | None:
            v = attrs.get(name)
            return None if v is None else tuple(int(i) for i in v)

        return cls(attrs.get("auto_pad") or "NOTSET", ints("dilations"), int(attrs.get("group", 1)),
                   ints("kernel_shape"), ints("pads"), ints("strides"))

    def window(self, nd: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(strides, dilations) with their defaults for ``nd`` spatial dims, unvalidated."""
        return self.strides or (1,) * nd, self.dilations or (1,) * nd

    def geometry(self, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> tuple[list[int], list[int], list[int]]:
        """Validated (strides, pads, dilations) for a Conv with weights ``w_shape`` on an input of ``x_shape``.

        Raises:
            InvalidInputError: the input's rank does not fit the weights.
            InvalidArgumentError: bad kernel_shape, strides, dilations, pads or auto_pad.
        """
        kernel, strides, dilations = _window("Conv", x_shape, w_shape, self.dilations, self.kernel_shape,
                                             self.strides)
        pads = resolve_pads(self.auto_pad, x_shape[2:], kernel, strides, dilations, self.pads)
        return strides, pads, dilations

    def output_shape(self, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, Cout, *spatial) of the Conv on ``x_shape`` (raises as :meth:`geometry`)."""
        strides, pads, dilations = self.geometry(x_shape, w_shape)
        spatial = conv_out_spatial(x_shape[2:], w_shape[2:], strides, dilations, pads)
        return (x_shape[0], w_shape[0], *spatial)


def run_conv(x: Array, prep: PreparedConv, b: Array | None, geom: tuple, act: int, p0: float, p1: float) -> Array:
    """The dense Conv on prepared weights and a resolved geometry, then activation ``act``, in x's float dtype."""
    y = dense_conv(_float32("Conv", x), prep, None if b is None else np.asarray(b, np.float32),
                   *geom, act, p0, p1)
    return y if x.dtype == np.float32 else y.astype(x.dtype)


@register("Conv")
def Conv(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    """ONNX Conv (1-D/2-D/3-D, groups, dilations, auto_pad)."""
    return FusedConv(X, W, B, auto_pad=auto_pad, dilations=dilations, group=group,
                     kernel_shape=kernel_shape, pads=pads, strides=strides)


@register("FusedConv", domain=INTERNAL_DOMAIN)
def FusedConv(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
              strides=None, activation=0, act_p0=0.0, act_p1=0.0):
    """Conv followed by a fused activation (codes in kernels/activation.py).

    With constant weights the planner runs the prepared layer instead (``ops/conv_layer.py``).
    """
    attrs = ConvAttrs.from_attrs(dict(auto_pad=auto_pad, dilations=dilations, group=group,
                                      kernel_shape=kernel_shape, pads=pads, strides=strides))
    geom = attrs.geometry(X.shape, W.shape)
    prep = prepare_conv(_float32("Conv", W), attrs.group)
    return run_conv(X, prep, B, geom, int(activation), float(act_p0), float(act_p1))


def _transpose_geometry(x_shape, w_shape, auto_pad, dilations, kernel_shape, output_padding,
                        output_shape, pads, strides):
    """(strides, dilations, pads_begin, out_spatial) per the ONNX ConvTranspose spec."""
    nd = len(w_shape) - 2
    kernel, strides, dilations = _window("ConvTranspose", x_shape, w_shape, dilations, kernel_shape, strides)
    out_pad = [int(v) for v in output_padding] if output_padding is not None else [0] * nd
    out_pad = out_pad[:nd] if len(out_pad) >= nd else out_pad + [0] * (nd - len(out_pad))
    full = [f + o for f, o in zip(full_out_spatial(x_shape[2:], kernel, strides, dilations), out_pad)]
    if output_shape is not None:
        out = [int(v) for v in output_shape][-nd:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [n * s for n, s in zip(x_shape[2:], strides)]
    else:
        p = resolve_pads("NOTSET" if auto_pad != "VALID" else "VALID", x_shape[2:], kernel, strides,
                         dilations, pads)
        return strides, dilations, p[:nd], [f - p[i] - p[nd + i] for i, f in enumerate(full)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [f - o for f, o in zip(full, out)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        begin = [int(v) for v in pads][:nd] if pads is not None else [0] * nd
    return strides, dilations, begin, out


def _run_transpose(x: Array, prep: PreparedConvTranspose, b: Array | None, geom: tuple) -> Array:
    y = dense_conv_transpose(_float32("ConvTranspose", x), prep,
                             None if b is None else np.asarray(b, np.float32), *geom)
    return y if x.dtype == np.float32 else y.astype(x.dtype)


@register("ConvTranspose")
def ConvTranspose(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                  output_padding=None, output_shape=None, pads=None, strides=None):
    """ONNX ConvTranspose (output_padding, output_shape, groups, dilations, auto_pad)."""
    geom = _transpose_geometry(X.shape, W.shape, auto_pad, dilations, kernel_shape, output_padding,
                               output_shape, pads, strides)
    prep = prepare_conv_transpose(_float32("ConvTranspose", W), int(group))
    return _run_transpose(X, prep, B, geom)


@register_builder("ConvTranspose")
def _conv_transpose_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """Prepare constant ConvTranspose weights once; cache the geometry per input shape."""
    w = consts[1] if len(consts) > 1 else None
    if w is None:
        return None
    attrs = dict(node.attrs)
    prep = prepare_conv_transpose(_float32("ConvTranspose", w), int(attrs.get("group", 1)))
    keys = ("auto_pad", "dilations", "kernel_shape", "output_padding", "output_shape", "pads", "strides")
    geo_attrs = {k: attrs.get(k) for k in keys}
    geo_attrs["auto_pad"] = geo_attrs["auto_pad"] or "NOTSET"
    cache: dict[tuple[int, ...], tuple] = {}

    def run(X, W=None, B=None):
        geom = cache.get(X.shape)
        if geom is None:
            geom = cache[X.shape] = _transpose_geometry(X.shape, w.shape, **geo_attrs)
        return _run_transpose(X, prep, B, geom)

    return run
