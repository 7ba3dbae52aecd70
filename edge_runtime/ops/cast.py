"""Cast and CastLike, between every ONNX tensor type numpy (with ml_dtypes) can hold.

The computed types (float32/float64, (u)int8-64, bool) and float16 convert with numpy's
``astype``. The narrow types ONNX added for quantised storage (bfloat16, float8 E4M3FN/E4M3FNUZ/
E5M2/E5M2FNUZ, float4 E2M1, (u)int4, (u)int2) come from ``ml_dtypes`` (an onnx dependency, so
installed wherever onnx is): floats round to nearest even and, with ``saturate=1`` (the default),
float8/float4 targets clamp to the type's largest finite value first, as the spec's tables say;
(u)int4/(u)int2 convert as ml_dtypes does. float8 E8M0 (its ``round_mode``) is not implemented.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import UnsupportedDTypeError
from edge_runtime.ops.elementwise import ANY, check_dtype
from edge_runtime.ops.registry import register

Array = NDArray[Any]

#: ONNX TensorProto element types with a plain numpy dtype.
CAST_TARGETS = {1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16),
                5: np.dtype(np.int16), 6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_),
                10: np.dtype(np.float16), 11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64)}
#: ONNX element types held by ml_dtypes: bfloat16, float8 x4, uint4, int4, float4e2m1, uint2, int2.
_NARROW = (16, 17, 18, 19, 20, 21, 22, 23, 25, 26)
#: What Cast reads besides the computed types: float16 (the boundary casts of passes/float16.py).
CAST_INPUTS = ANY + (np.dtype(np.float16),)


def _narrow_types() -> dict[int, np.dtype]:
    from onnx import helper

    return {t: np.dtype(helper.tensor_dtype_to_np_dtype(t)) for t in _NARROW}


def _is_narrow(dt: np.dtype) -> bool:
    """An ml_dtypes type (its kind is "V" or, for some float8 types, "f")."""
    return dt.type.__module__.startswith("ml_dtypes")


def cast_target(op: str, to: int) -> np.dtype:
    """The numpy dtype of ONNX element type ``to``.

    Raises:
        UnsupportedDTypeError: a type without a numpy/ml_dtypes representation (string, complex, E8M0).
    """
    target = CAST_TARGETS.get(int(to)) or _narrow_types().get(int(to))
    if target is None:
        import onnx

        name = onnx.TensorProto.DataType.Name(int(to)) if int(to) in onnx.TensorProto.DataType.values() else to
        raise UnsupportedDTypeError(
            f"{op}: target type {name} is not supported; expected a float (FLOAT, DOUBLE, FLOAT16, BFLOAT16, "
            f"FLOAT8*, FLOAT4E2M1), integer ((U)INT2/4/8/16/32/64) or BOOL type. Export the model in float32.")
    return target


def convert(x: Array, target: np.dtype, saturate: int = 1) -> Array:
    """``x`` as ``target``; float8/float4 targets clamp to their largest finite value when ``saturate``.

    Narrow integer targets convert as ml_dtypes does (toward zero; out of range gives 0), which is
    what the ONNX backend cases expect.
    """
    if not (_is_narrow(target) or _is_narrow(x.dtype)):
        return np.asarray(x.astype(target, copy=False))
    import ml_dtypes

    if _is_narrow(x.dtype):
        x = x.astype(np.float32)
    if saturate and _is_narrow(target) and target.name.startswith(("float8", "float4")):
        big = float(ml_dtypes.finfo(target).max)
        x = np.clip(x.astype(np.float32, copy=False), -big, big)
    with np.errstate(invalid="ignore"):
        return np.asarray(x.astype(target))


@register("Cast", since_version=6)
def Cast(input: Array, *, to: int, saturate: int = 1, round_mode: str = "up") -> Array:
    """Convert to the element type ``to`` (float->int truncates toward zero; narrow types: :func:`convert`).

    Raises:
        UnsupportedDTypeError: ``to`` or the input's dtype has no numpy/ml_dtypes representation.
    """
    target = cast_target("Cast", to)
    if not _is_narrow(input.dtype):
        check_dtype("Cast", input, CAST_INPUTS)
    return convert(input, target, saturate)


@register("CastLike", since_version=15)
def CastLike(input: Array, target_type: Array, *, saturate: int = 1, round_mode: str = "up") -> Array:
    """Convert ``input`` to the dtype of ``target_type``."""
    for x in (input, target_type):
        if not _is_narrow(x.dtype):
            check_dtype("CastLike", x, CAST_INPUTS)
    return convert(input, target_type.dtype, saturate)
