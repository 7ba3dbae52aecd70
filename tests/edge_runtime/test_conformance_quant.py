"""ONNX backend node conformance for the integer ops (QuantizeLinear ... QLinearConv).

The shared harness's dtype rule (``conformance.SUPPORTED_ELEM_TYPES``) is what the tensor ops
accept, which now includes the sub-byte and float8 types; the quantization ops compute with
8-bit integers (and float/float16 scales) only, so this family keeps its own narrower rule and
excludes the int4/int2/uint4/uint2, float8 and float4 formats automatically.
"""
from __future__ import annotations

import pytest
from onnx import TensorProto

from tests.edge_runtime import conformance

OP_TYPES = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
            "QLinearMatMul", "QLinearConv")

#: Element types this family's ops compute with (quantized values are 8-bit; int32 biases).
QUANT_ELEM_TYPES = frozenset({TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL,
                              TensorProto.UINT8, TensorProto.INT8})

QUANT_DTYPE_REASON = ("quantization to {names} is not implemented: the integer ops quantize to int8/uint8 "
                      "with float32 scales (the formats onnxruntime's quantizer emits for CPUs)")

#: case name -> why it cannot pass.
_CAST_U8 = "function body casts to UINT8, which Cast does not support yet (dtype broadening is another issue)"
EXCLUSIONS: dict[str, str] = {
    "test_dynamicquantizelinear_expanded": _CAST_U8,
    "test_dynamicquantizelinear_max_adjusted_expanded": _CAST_U8,
    "test_dynamicquantizelinear_min_adjusted_expanded": _CAST_U8,
}


def _reason(case) -> str | None:
    if case.name in EXCLUSIONS:
        return EXCLUSIONS[case.name]
    types, non_tensor = conformance._value_elem_types(case)
    if non_tensor:
        return conformance.NON_TENSOR_REASON
    bad = sorted(TensorProto.DataType.Name(t) for t in types - QUANT_ELEM_TYPES if t != 0)
    return QUANT_DTYPE_REASON.format(names=", ".join(bad)) if bad else None


PARAMS = [pytest.param(c, id=c.name, marks=[pytest.mark.skip(reason=r)] if (r := _reason(c)) else [])
          for c in conformance.cases_for(OP_TYPES)]


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)
