"""Plan-time builders: QLinearConv / QLinearMatMul / QGemm with constant int8 weights run the int8 kernels.

When the weights, scales and zero points are initializers, the weights are laid out once
(:mod:`edge_runtime.kernels.sparse_int8`, :mod:`edge_runtime.kernels.sparse_int8_conv`) and
every run skips the inputs equal to their zero point; a conv with a small reduction
(C*KH*KW <= 32, nothing worth skipping) runs :mod:`edge_runtime.kernels.dense_int8_conv`.
:func:`conv_runner` and :func:`qgemm_runner` also serve the fused ops of
:mod:`edge_runtime.ops.quant_fused` (a lookup table applied in the epilogue). The kernels compute exactly what the
plain ops of :mod:`edge_runtime.ops.quant_linear` compute (same int32 sums, same float32
requantization), so the choice changes speed only; the builders fall back to the plain ops
(return None) for what the kernels do not cover: grouped or non-2-D convolutions,
non-constant weights or parameters, nonzero weight zero points, per-row activation zero
points. Picking dense onnxruntime for dense layers is the engine's job (issue 10).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from edge_runtime.kernels.dense_int8_conv import MAX_REDUCTION, dense_conv_int8, prepare_dense_int8_conv
from edge_runtime.kernels.geometry import conv2d_out
from edge_runtime.kernels.lookup import lookup_bytes
from edge_runtime.kernels.qgemm_epilogue import qgemm_float, qgemm_quantized
from edge_runtime.kernels.sparse_int8 import prepare_int8_weights, requant_params, sparse_matmul_int8
from edge_runtime.kernels.sparse_int8_conv import prepare_int8_conv, sparse_conv_int8
from edge_runtime.ops.quant_contrib import MS_DOMAIN, QGemm, qgemm_output
from edge_runtime.ops.quant_linear import QLinearConv, QLinearMatMul, conv_geometry
from edge_runtime.ops.registry import register_builder

Array = NDArray[Any]
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))


class Int8Run:
    """A builder's run with the int8 kernel it chose at plan time, for ``run_with_stats``.

    ``last_kernel`` is what this thread's last call ran: ``kernel`` (``"sparse"``: the
    zero-skipping int8 kernel; ``"dense"``: the dense int8 direct conv) or ``"plain"`` when the
    input fell back to the plain op (a dtype other than the zero point's). Without it the numba
    engine's statistics showed every such layer as "plain".

    Example:
        >>> run = Int8Run("sparse", lambda x: (x + 1, x.dtype == np.uint8))
        >>> int(run(np.uint8(1))), run.last_kernel, int(run(np.int8(1))), run.last_kernel
        (2, 'sparse', 2, 'plain')
    """

    last_density = None

    def __init__(self, kernel: str, run: Callable[..., tuple[Array, bool]]) -> None:
        self.kernel, self._run, self._last = kernel, run, threading.local()

    @property
    def last_kernel(self) -> str:
        """The kernel this thread's last call ran ("plain" before any call)."""
        return getattr(self._last, "kernel", "plain")

    def __call__(self, *args: Any) -> Array:
        y, planned = self._run(*args)
        self._last.kernel = self.kernel if planned else "plain"
        return y


def _constants(consts: list, indices: tuple[int, ...]) -> list[Array] | None:
    vals = [consts[i] if i < len(consts) else None for i in indices]
    return None if any(v is None for v in vals) else [np.asarray(v) for v in vals]


def _scalar_zp(zp: Array) -> bool:
    return zp.size == 1 and zp.dtype in _INT8


def conv_runner(node: Any, consts: list, table: Array | None = None) -> Int8Run | None:
    """The int8 kernel run for a QLinearConv node (a folded lookup ``table`` in its epilogue), or None.

    A small reduction (C*KH*KW <= 32: the first conv on an image, nothing to skip) runs the dense
    direct conv (:mod:`edge_runtime.kernels.dense_int8_conv`), any other 2-D group-1 conv with
    constant symmetric int8 weights the zero-skipping one; the run falls back to the plain op
    (then the table) for an input whose dtype is not the zero point's.
    """
    c = _constants(consts, (1, 2, 3, 4, 5, 6, 7))
    attrs = dict(node.attrs)
    if c is None or int(attrs.get("group", 1)) != 1:
        return None
    x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = c
    if w.ndim != 4 or w.dtype != np.int8 or np.any(w_zp != 0) or not _scalar_zp(x_zp) or not _scalar_zp(y_zp):
        return None
    bias = consts[8] if len(consts) > 8 else None
    if len(node.inputs) > 8 and node.inputs[8] and bias is None:
        return None  # a bias computed at run time
    rq = requant_params(float(x_scale), w_scale, float(y_scale), int(y_zp), w.shape[0], bias=bias,
                        out_dtype=y_zp.dtype, table=table)
    dense = int(np.prod(w.shape[1:])) <= MAX_REDUCTION
    prep = prepare_dense_int8_conv(w) if dense else prepare_int8_conv(w)
    kernel = dense_conv_int8 if dense else sparse_conv_int8
    geo_attrs = {k: attrs.get(k) for k in ("dilations", "kernel_shape", "pads", "strides")}
    auto_pad = attrs.get("auto_pad") or "NOTSET"
    cache: dict[tuple[int, ...], tuple] = {}
    zp = int(x_zp)

    def run(x, *inputs):
        if x.dtype != x_zp.dtype:
            y = QLinearConv(x, *inputs[:8], **attrs)
            return (y if table is None else lookup_bytes(y.view(np.uint8), table)), False
        geom = cache.get(x.shape)
        if geom is None:  # checked once per input shape; the kernel is then told the output size
            _, strides, pads, dil = conv_geometry("QLinearConv", x.shape, w.shape, auto_pad, **geo_attrs)
            hw = conv2d_out("QLinearConv", x.shape, w.shape[1], w.shape[2:], strides, pads, dil)
            geom = cache[x.shape] = (strides, pads, dil, hw)
        return kernel(x, zp, prep, *geom[:3], requant=rq, out_hw=geom[3]), True

    return Int8Run("dense" if dense else "sparse", run)


@register_builder("QLinearConv", since_version=10)
def qlinear_conv_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """int8 QLinearConv for 2-D, group-1 convolutions with constant symmetric int8 weights (:func:`conv_runner`)."""
    return conv_runner(node, consts)


@register_builder("QLinearMatMul", since_version=10)
def qlinear_matmul_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """Sparse int8 QLinearMatMul for a constant 2-D symmetric int8 B (rows of A are the tokens)."""
    c = _constants(consts, (1, 2, 3, 4, 5, 6, 7))
    if c is None:
        return None
    a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = c
    if b.ndim != 2 or b.dtype != np.int8 or np.any(b_zp != 0) or not _scalar_zp(a_zp) or not _scalar_zp(y_zp) \
            or a_scale.size != 1 or y_scale.size != 1:
        return None
    prep = prepare_int8_weights(b)
    rq = requant_params(float(a_scale), b_scale, float(y_scale), int(y_zp), b.shape[1], out_dtype=y_zp.dtype)
    zp = int(a_zp)

    def run(a, *inputs):
        if a.dtype != a_zp.dtype or a.ndim < 2 or a.shape[-1] != b.shape[0]:
            return QLinearMatMul(a, *inputs), False
        y = sparse_matmul_int8(a.reshape(-1, a.shape[-1]), zp, prep, rq)
        return y.reshape(*a.shape[:-1], b.shape[1]), True

    return Int8Run("sparse", run)


def qgemm_runner(node: Any, consts: list, table: Array | None = None) -> Int8Run | None:
    """The int8 run of a QGemm node (a folded lookup ``table`` after its quantized output), or None.

    int32 sums from the zero-skipping kernel, then QGemm's epilogue compiled
    (:mod:`edge_runtime.kernels.qgemm_epilogue`) for a scalar or per-column C and scalar output
    parameters, else numpy's (:func:`edge_runtime.ops.quant_contrib.qgemm_output`); both equal the plain op.
    """
    c = _constants(consts, (1, 2, 3, 4, 5))
    attrs = dict(node.attrs)
    if c is None or int(attrs.get("transA", 0)):
        return None
    a_scale, a_zp, b, b_scale, b_zp = c
    if b.ndim != 2 or b.dtype != np.int8 or np.any(b_zp != 0) or not _scalar_zp(a_zp) or a_scale.size != 1:
        return None
    if any(i < len(node.inputs) and node.inputs[i] and (i >= len(consts) or consts[i] is None) for i in (6, 7, 8)):
        return None  # a bias or output scale computed at run time
    tail = [consts[i] if i < len(consts) else None for i in (6, 7, 8)]
    if table is not None and tail[1] is None:
        return None  # a lookup needs the quantized output
    b_kn = b.T if int(attrs.get("transB", 0)) else b
    n = b_kn.shape[1]
    prep = prepare_int8_weights(np.ascontiguousarray(b_kn))
    zp, alpha = int(a_zp), float(attrs.get("alpha", 1.0))
    scale = np.float32(alpha) * np.asarray(a_scale, np.float32).reshape(()) * np.asarray(b_scale, np.float32)
    compiled = scale.size in (1, n) and (tail[0] is None or np.asarray(tail[0]).size in (1, n)) and (
        tail[1] is None or (np.asarray(tail[1]).size == 1 and np.asarray(tail[2]).size == 1
                            and np.asarray(tail[2]).dtype in _INT8))
    scale_n = np.ascontiguousarray(np.broadcast_to(scale.reshape(-1), (n,)), np.float32)
    bias_n = np.zeros(n, np.int32) if tail[0] is None else np.ascontiguousarray(
        np.broadcast_to(np.asarray(tail[0], np.int32).reshape(-1), (n,)))
    out_dtype = None if tail[1] is None else np.asarray(tail[2]).dtype if table is None else table.dtype
    lut = table if table is not None else np.zeros(256, np.uint8)

    def epilogue(acc: Array, a: Array) -> Array:
        if not compiled:
            y = qgemm_output(acc, tail[0], alpha, a_scale, b_scale, tail[1], tail[2], a)
            return y if table is None else lookup_bytes(y.view(np.uint8), table)
        out = np.empty(acc.shape, np.float32 if out_dtype is None else out_dtype)
        if out_dtype is None:
            qgemm_float(acc, bias_n, scale_n, out)
        else:
            y_zp = np.asarray(tail[2])
            qgemm_quantized(acc, bias_n, scale_n, float(np.asarray(tail[1], np.float32).reshape(())),
                            int(y_zp), y_zp.dtype == np.uint8, out, lut, table is not None)
        return out

    def run(a, *inputs):
        if a.dtype != a_zp.dtype or a.ndim != 2 or a.shape[1] != b_kn.shape[0]:
            y = QGemm(a, *inputs[:8], **attrs)
            return (y if table is None else lookup_bytes(y.view(np.uint8), table)), False
        return epilogue(sparse_matmul_int8(a, zp, prep), a), True

    return Int8Run("sparse", run)


@register_builder("QGemm", domain=MS_DOMAIN, since_version=1)
def qgemm_builder(node: Any, consts: list, ctx: Any) -> Callable[..., Array] | None:
    """int8 QGemm (com.microsoft) for a constant symmetric int8 B (:func:`qgemm_runner`)."""
    return qgemm_runner(node, consts)
