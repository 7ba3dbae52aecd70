"""The prepared Conv / FusedConv layer: dense kernel, zero-skipping kernel, crossover scale, cost.

A Conv whose weights are constants is prepared once (:func:`prepare_conv_layer`); the planner runs
its dense kernel, the dispatcher its sparse kernel (2-D, groups 1, a ReLU-family epilogue, a
constant bias) where the input is sparse enough, and the cost model and ``devices calibrate``
read its family, crossover scale and FLOPs from it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edge_runtime import act_codes
from edge_runtime.graph import Node
from edge_runtime.kernels.conv import prepare_conv
from edge_runtime.ops.conv import Array, ConvAttrs, _float32, run_conv
from edge_runtime.prepared import Epilogue, LayerWork, PreparedLayer, SparseKernel, const_input, register_prepare

_BYTES = 4  # fp32


class SparseConvKernel(SparseKernel):
    """2-D Conv (groups=1) skipping zero input activations; NCHW in and out."""

    def __init__(self, attrs: ConvAttrs, epilogue: Epilogue, w: Array, bias: Array | None, family: str,
                 threads: int) -> None:
        from edge_runtime.kernels import sparse_conv as sc
        from edge_runtime.kernels.geometry import resolve_pads

        self._sc, self._resolve = sc, resolve_pads
        self.prepared = sc.prepare_conv_weights(w)
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        self.kernel = list(w.shape[2:])
        strides, dilations = attrs.window(2)
        self.strides, self.dilations = list(strides), list(dilations)
        self.auto_pad, self.pads = attrs.auto_pad, None if attrs.pads is None else list(attrs.pads)
        self.act, self.p0, self.p1 = epilogue.activation, epilogue.p0, epilogue.p1
        self.threads = threads
        self.macs_per_input = w.shape[0] * w.shape[2] * w.shape[3] / (self.strides[0] * self.strides[1])
        self._family = family

    def family(self, x: Array) -> str:
        return self._family

    def __call__(self, x: Array, dens: float) -> Array:
        pads = self._resolve(self.auto_pad, x.shape[2:], self.kernel, self.strides, self.dilations, self.pads)
        parallel = self.threads > 1 and dens * x.size * self.macs_per_input * 2 >= 8e6
        return self._sc.sparse_conv2d(x, self.prepared, self.bias, self.strides, pads, self.dilations,
                                      self.act, self.p0, self.p1, parallel)


def conv_crossover_scale(w_shape: tuple[int, ...], strides: Sequence[int] = (1, 1),
                         dilations: Sequence[int] = (1, 1)) -> float:
    """Factor on the family crossover for a Conv weight (Cout, Cin, KH, KW).

    The conv crossover is the break-even of a 3x3 128 -> 128 conv (density ~0.45 against
    the runtime's dense conv, 0.35 with margin). Measured force/off break-evens on the
    build machine (docs/sparse_kernels.md): 64 -> 128 @14 0.45; 32 -> 64 @56 0.35;
    32 -> 32 @28 0.28; 64 @56 0.23 (its dense path was Winograd); 256 @14 0.25 (two
    128-channel output tiles walk each pixel's list twice). Narrower outputs fill fewer
    accumulator registers per pass, so sqrt(Cout/128) below 128 outputs, 128/Cout above.
    Re-measured against the direct dense kernel (kernels/direct_conv.py, 2026-12-06,
    docs/dense_kernels.md): break-evens 32 @40 0.16, 32 @28 0.24, 32 -> 64 @56 0.30,
    64 -> 32 @40 0.22, 64 @56 0.29, 64 @20 0.41, 128 @28 0.44, 128 @14 0.47, 256 @14 0.17
    (Winograd), all at or above these limits but 32 @40 (limit 0.175: ~1.05x the dense time).
    1x1 convs (family gemm, whose dense path is one GEMM) pay a per-pixel cost (bias,
    activation, the NCHW store) that only wide layers amortise. Force/off break-evens
    (``benchmarks/bench_dispatch.py --sweep-1x1``, 2026-11-28): 128 @28 0.15; 128 -> 512
    @28 0.25; 512 -> 128 @28 0.15; 256 @14 0.26; 1024 -> 256 @14 0.23; 256 -> 1024 @14
    0.28; 512 @7 0.39; 64 -> 256 @56 above 1 (its dense GEMM is slow); 256 -> 64 @56
    0.08; never (slower even at density 0.05) for 64 @56, 32 -> 128 @56, 16 -> 96 @56.
    Hence 0 (auto keeps the layer dense, without a density check) when Cout < 128 or
    Cin < 64, else (2/3) * (min(Cin, Cout)/256)^2: 0.05-0.2 with the gemm crossover
    0.30, below every measured break-even (64 -> 256 @56 is left far below its own).
    """
    cout, cin = w_shape[0], w_shape[1]
    if tuple(w_shape[2:]) == (1, 1):
        if cout < 128 or cin < 64:
            return 0.0
        return 2 / 3 * min(1.0, min(cin, cout) / 256) ** 2
    return min(1.0, cout / 128) ** 0.5 * min(1.0, 128 / cout)


class ConvLayer(PreparedLayer):
    """A Conv / FusedConv with constant weights (any rank and group; the sparse kernel takes 2-D, groups 1).

    Example:
        >>> import numpy as np
        >>> from edge_runtime.graph import Node
        >>> node = Node("FusedConv", ("x", "W"), ("y",), {"pads": [1, 1, 1, 1]}, "c")
        >>> layer = prepare_conv_layer(node, {"W": np.ones((128, 64, 3, 3), np.float32)})
        >>> layer.family((1, 64, 14, 14)), layer.crossover_scale, layer.cost((1, 64, 14, 14)).output_shape
        ('conv', 1.0, (1, 128, 14, 14))
    """

    def __init__(self, node: Node, w: Array, bias: Array | None, bias_known: bool, threads: int) -> None:
        super().__init__(node, w, bias, bias_known, threads)
        self.attrs = ConvAttrs.from_attrs(node.attrs)
        nd = max(w.ndim - 2, 0)
        self._family = None if self.attrs.group != 1 else ("gemm" if self.weight_shape[2:] == (1, 1) else "conv")
        self.crossover_scale = (conv_crossover_scale(self.weight_shape, *self.attrs.window(nd))
                                if self._family is not None and w.ndim == 4 else 1.0)

    def family(self, x_shape: tuple[int, ...] | None) -> str | None:
        """``"conv"``, or ``"gemm"`` for a 1x1 conv (a token-batched MatMul over pixels, whose dense
        path is one GEMM, no im2col); None for a grouped conv."""
        return self._family

    def cost(self, x_shape: tuple[int, ...] | None, out_shape: tuple[int, ...] | None = None) -> LayerWork:
        """FLOPs ``2 * output size * Cin/group * prod(kernel)``; the output shape is derived from the
        attributes (SAME padding included) when not given.

        Raises:
            InvalidInputError, InvalidArgumentError: the output is derived and the attributes do not fit.
        """
        if out_shape is None and x_shape is not None:
            out_shape = self.attrs.output_shape(x_shape, self.weight_shape)
        out = int(np.prod(out_shape)) if out_shape is not None else 0
        return LayerWork(2.0 * out * int(np.prod(self.weight_shape[1:])), float(_BYTES * self.weight_size),
                         out_shape)

    def _build_dense(self) -> Callable[..., Array]:
        """Weights prepared once, geometry cached per input shape: a run is one kernel call."""
        w, attrs = self._w, self.attrs
        act, p0, p1 = self.epilogue.activation, self.epilogue.p0, self.epilogue.p1
        prep = prepare_conv(_float32("Conv", w), attrs.group)
        bias = None if self._bias is None else np.ascontiguousarray(self._bias, np.float32)
        cache: dict[tuple[int, ...], tuple] = {}

        def run(X, W=None, B=None):
            geom = cache.get(X.shape)
            if geom is None:
                geom = cache[X.shape] = attrs.geometry(X.shape, w.shape)
            return run_conv(X, prep, bias if bias is not None else B, geom, act, p0, p1)

        return run

    def _build_sparse(self) -> SparseKernel | None:
        w = self._w
        if self.op_type != "FusedConv" or w.ndim != 4 or self.attrs.group != 1 or w.dtype != np.float32:
            return None
        if self.epilogue.activation not in act_codes.SPARSE_CODES or not self._bias_known:  # SiLU, HardSwish, ...
            return None
        return SparseConvKernel(self.attrs, self.epilogue, w, self._bias, self._family, self.threads)


@register_prepare("Conv", "FusedConv")
def prepare_conv_layer(node: Node, constants: Mapping[str, Array], ctx: Any = None) -> ConvLayer | None:
    """The prepared layer of a Conv / FusedConv whose weights are constants, else None."""
    known, w = const_input(node, constants, 1)
    if not known or w is None:
        return None
    bias_known, bias = const_input(node, constants, 2)
    return ConvLayer(node, w, bias, bias_known, int(getattr(ctx, "threads", 1) or 1))
