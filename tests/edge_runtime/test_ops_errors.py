"""Error messages of the dense ops (elementwise, matmul, norm, reduce): type, op name, value, expectation."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import (
    EdgeRuntimeError,
    InvalidInputError,
    InvalidModelError,
    UnsupportedDTypeError,
)
from edge_runtime.graph import Node
from edge_runtime.ops.registry import resolve

F32 = np.ones((2, 3), np.float32)


def op(name: str, opset: int = 17):
    return resolve("", name, opset)[0].fn


@pytest.mark.parametrize("name,args,dtype", [
    ("Sqrt", (np.ones(3, np.int64),), "int64"),
    ("Erf", (np.ones(3, np.float16),), "float16"),
    ("Add", (np.ones(3, np.complex64), np.ones(3, np.complex64)), "complex64"),
    ("MatMul", (np.ones((2, 2), np.float16), np.ones((2, 2), np.float16)), "float16"),
    ("LayerNormalization", (np.ones((2, 2), np.float16), np.ones(2, np.float16)), "float16"),
    ("ReduceMean", (np.ones(3, np.bool_),), "bool"),
    ("Softmax", (np.ones(3, np.int64),), "int64"),
])
def test_unsupported_dtype_names_op_and_dtype(name, args, dtype):
    with pytest.raises(UnsupportedDTypeError) as info:
        op(name)(*args)
    message = str(info.value)
    assert name in message and dtype in message and "float32" in message
    assert isinstance(info.value, EdgeRuntimeError)


def test_cast_to_unsupported_type_names_the_onnx_type():
    with pytest.raises(UnsupportedDTypeError, match=r"Cast: target type STRING .*FLOAT, DOUBLE, FLOAT16"):
        op("Cast")(F32, to=8)


def test_matmul_shape_mismatch_states_both_shapes():
    with pytest.raises(InvalidInputError, match=r"\(2, 3\) and \(2, 3\)"):
        op("MatMul")(F32, F32)


def test_gemm_rejects_non_matrix_and_inner_mismatch():
    with pytest.raises(InvalidInputError, match="2-D"):
        op("Gemm")(np.ones((1, 2, 3), np.float32), F32)
    with pytest.raises(InvalidInputError, match=r"transA=0, transB=0"):
        op("Gemm")(F32, F32)


def test_training_mode_is_refused_with_a_fix():
    with pytest.raises(InvalidModelError, match=r"model\.eval\(\)"):
        op("Dropout")(F32, np.array(0.5, np.float32), np.array(True))
    with pytest.raises(InvalidModelError, match="training_mode=1"):
        p = np.ones(3, np.float32)
        op("BatchNormalization")(F32, p, p, p, p, training_mode=1)


def test_dropout_zero_ratio_training_is_identity():
    y, mask = op("Dropout")(F32, np.array(0.0, np.float32), np.array(True))
    assert y is F32 and mask.dtype == np.bool_ and mask.all()


def test_dropout_builder_skips_the_mask_when_unused():
    from edge_runtime.ops.registry import resolve as res

    builder = res("", "Dropout", 13)[1]
    fn = builder(Node("Dropout", ("x",), ("y",)), [None], None)
    assert fn is not None and fn(F32) is F32
    assert builder(Node("Dropout", ("x",), ("y", "mask")), [None], None) is None


@pytest.mark.parametrize("call,match", [
    (lambda: op("LayerNormalization")(F32, np.ones(3, np.float32), axis=2), "axis=2 is out of range"),
    (lambda: op("GroupNormalization", 21)(np.ones((1, 3, 2), np.float32), np.ones(3, np.float32),
                                          np.ones(3, np.float32), num_groups=2), "num_groups=2"),
    (lambda: op("ReduceSum")(F32, np.array([5])), r"axes \[5\] out of range"),
    (lambda: op("ArgMax")(F32, axis=-3), "axis=-3"),
    (lambda: op("Gelu", 20)(F32, approximate="fast"), "'fast'"),
    (lambda: op("LpNormalization")(F32, p=3), "p=3"),
])
def test_invalid_attributes_name_the_value(call, match):
    with pytest.raises(InvalidModelError, match=match):
        call()


def test_topk_k_too_large():
    with pytest.raises(InvalidInputError, match="k=4"):
        op("TopK")(F32, np.array([4]))


@pytest.mark.parametrize("name", ["Add", "Relu", "Exp", "MatMul", "Gemm", "ReduceMean", "Softmax", "Sigmoid"])
def test_float32_in_float32_out(name):
    args = {"Add": (F32, F32), "MatMul": (F32, F32.T), "Gemm": (F32, F32.T)}.get(name, (F32,))
    out = op(name)(*args)
    assert out.dtype == np.float32
