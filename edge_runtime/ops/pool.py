"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (kernels/pool.py) and MaxUnpool."""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError, UnsupportedDTypeError, UnsupportedOpError
from edge_runtime.kernels.geometry import check_positive, resolve_pads
from edge_runtime.kernels.pool import avg_pool, global_avg_pool, max_pool, max_pool_runner
from edge_runtime.ops.registry import register, register_builder

Array = NDArray[Any]


#: integer types MaxPool takes (opset 12): pooled in float32, which holds every 8-bit value exactly
_MAX_INTS = (np.dtype(np.int8), np.dtype(np.uint8))


def _check(op: str, x: Array, min_rank: int = 3) -> None:
    if not (np.issubdtype(x.dtype, np.floating) or (op == "MaxPool" and x.dtype in _MAX_INTS)):
        raise UnsupportedDTypeError(
            f"{op} input has dtype {x.dtype}; edge_runtime pools float16/float32/float64 tensors (and int8/"
            f"uint8 in MaxPool) only. Cast the input to float32.")
    if x.ndim < min_rank:
        raise InvalidInputError(
            f"{op} input has shape {x.shape}; expected (N, C, <spatial dims>) of rank >= {min_rank}. "
            f"Check the producer of this tensor.")


def _geometry(op: str, x: Array, auto_pad: str, dilations: Any, kernel_shape: Any, pads: Any,
              strides: Any) -> tuple[list[int], list[int], list[int], list[int]]:
    """Validated (kernel, strides, pads, dilations) for a pooling window."""
    _check(op, x)
    nd = x.ndim - 2
    if nd > 3:
        raise UnsupportedOpError(f"{op} over {nd} spatial dims is not supported; edge_runtime pools 1-D to 3-D.")
    if kernel_shape is None:
        raise InvalidArgumentError(f"{op} has no kernel_shape attribute; it is required. Fix the model.")
    kernel = check_positive("kernel_shape", kernel_shape, nd)
    strides = check_positive("strides", strides if strides is not None else [1] * nd, nd)
    dilations = check_positive("dilations", dilations if dilations is not None else [1] * nd, nd)
    pads = resolve_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads)
    return kernel, strides, pads, dilations


@register("MaxPool")
def MaxPool(X, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
            storage_order=0, strides=None):
    """ONNX MaxPool; returns (Y, Indices) — the executor drops Indices when the node has one output."""
    kernel, strides, pads, dilations = _geometry("MaxPool", X, auto_pad, dilations, kernel_shape, pads,
                                                 strides)
    y, idx = max_pool(np.asarray(X, np.float32), kernel, strides, pads, dilations, bool(ceil_mode),
                      True, int(storage_order))
    return y.astype(X.dtype, copy=False), idx


def max_pool_values(X: Array, **attrs: Any) -> Array:
    """MaxPool's Y only (skips the index bookkeeping); for the planner/builders."""
    kernel, strides, pads, dilations = _geometry("MaxPool", X, attrs.get("auto_pad", "NOTSET"),
                                                 attrs.get("dilations"), attrs.get("kernel_shape"),
                                                 attrs.get("pads"), attrs.get("strides"))
    y, _ = max_pool(np.asarray(X, np.float32), kernel, strides, pads, dilations,
                    bool(attrs.get("ceil_mode", 0)), False)
    return y.astype(X.dtype, copy=False)


@register("AveragePool")
def AveragePool(X, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                kernel_shape=None, pads=None, strides=None):
    """ONNX AveragePool (count_include_pad, ceil_mode, dilations, auto_pad)."""
    kernel, strides, pads, dilations = _geometry("AveragePool", X, auto_pad, dilations, kernel_shape, pads,
                                                 strides)
    y = avg_pool(np.asarray(X, np.float32), kernel, strides, pads, dilations, bool(ceil_mode),
                 bool(count_include_pad))
    return y.astype(X.dtype, copy=False)


@register("GlobalAveragePool")
def GlobalAveragePool(X):
    """Mean over all spatial dims, keeping them as size 1."""
    _check("GlobalAveragePool", X)
    if X.dtype == np.float32:
        return global_avg_pool(X)  # numba: one vectorised float32 sum per plane (numpy's mean: ~2x slower)
    return X.mean(axis=tuple(range(2, X.ndim)), keepdims=True, dtype=np.float32).astype(X.dtype, copy=False)


@register("GlobalMaxPool")
def GlobalMaxPool(X):
    """Max over all spatial dims, keeping them as size 1."""
    _check("GlobalMaxPool", X)
    return X.max(axis=tuple(range(2, X.ndim)), keepdims=True)


@register_builder("MaxPool")
def _max_pool_builder(node: Any, consts: list, ctx: Any):
    """MaxPool with one output: skip computing Indices; resolve the geometry once per input shape."""
    if len([o for o in node.outputs if o]) > 1 or (len(node.outputs) > 1 and node.outputs[1]):
        return None
    attrs = dict(node.attrs)
    runners: dict[tuple[int, ...], Any] = {}

    def run(X):
        fn = runners.get(X.shape) if X.dtype == np.float32 and X.flags.c_contiguous else None
        if fn is None:
            if X.dtype != np.float32 or not X.flags.c_contiguous or X.shape in runners:
                return max_pool_values(X, **attrs)
            kernel, strides, pads, dilations = _geometry(
                "MaxPool", X, attrs.get("auto_pad", "NOTSET"), attrs.get("dilations"), attrs.get("kernel_shape"),
                attrs.get("pads"), attrs.get("strides"))
            fn = runners[X.shape] = max_pool_runner(X.shape, kernel, strides, pads, dilations,
                                                    bool(attrs.get("ceil_mode", 0)))
            if fn is None:  # 3-D pooling: the generic path
                return max_pool_values(X, **attrs)
        return fn(X)

    return run


@register("MaxUnpool", since_version=9)
def MaxUnpool(X, I, output_shape=None, *, kernel_shape=None, pads=None, strides=None):
    """The partial inverse of MaxPool: a zero tensor with ``X``'s values at the flat positions ``I``.

    The output is (N, C, *spatial) with each spatial size ``(in - 1) * stride + kernel - pad_begin -
    pad_end``, or ``output_shape`` when given. ``I`` (MaxPool's Indices) indexes the flattened
    output, as in onnxruntime and torch, so ``output_shape`` recovers the size of MaxPool's input.
    (The ONNX reference instead scatters into the inferred size and pads that with zeros.)

    Raises:
        InvalidArgumentError: kernel_shape is missing; InvalidInputError: X and I differ in shape, or an
            index lies outside the output.
    """
    if X.ndim < 3 or I.shape != X.shape:
        raise InvalidInputError(f"MaxUnpool: X {X.shape} and I {I.shape}; expected equal (N, C, <spatial dims>) "
                                "shapes (MaxPool's Y and Indices).")
    nd = X.ndim - 2
    if kernel_shape is None:
        raise InvalidArgumentError("MaxUnpool has no kernel_shape attribute; it is required. Fix the model.")
    kernel = check_positive("kernel_shape", kernel_shape, nd)
    strides = check_positive("strides", strides if strides is not None else [1] * nd, nd)
    pads = list(pads) if pads is not None else [0] * (2 * nd)
    if output_shape is not None:
        shape = tuple(int(v) for v in np.asarray(output_shape).reshape(-1))
    else:
        shape = X.shape[:2] + tuple((X.shape[2 + d] - 1) * strides[d] + kernel[d] - pads[d] - pads[nd + d]
                                    for d in range(nd))
    y = np.zeros(int(np.prod(shape, dtype=np.int64)), X.dtype)
    flat = np.asarray(I, np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= y.size):
        raise InvalidInputError(f"MaxUnpool: indices in [{flat.min()}, {flat.max()}] for an output of shape {shape} "
                                f"({y.size} values); expected MaxPool's Indices for an input of that shape.")
    y[flat] = X.reshape(-1)
    return y.reshape(shape)
