"""ONNX backend node conformance for the integer ops (QuantizeLinear ... QLinearConv).

The shared harness skips every case that uses int8/uint8 (``conformance.SUPPORTED_ELEM_TYPES``
predates the integer ops); this family widens the rule to the 8-bit types its ops compute
with, and keeps the automatic exclusion for the other types (int4, int16, float8, float16 scales, ...).
"""
from __future__ import annotations

import pytest
from onnx import TensorProto

from tests.edge_runtime import conformance

OP_TYPES = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
            "QLinearMatMul", "QLinearConv")

#: Element types this family computes with, beyond the harness's float32/int64/int32/bool.
QUANT_ELEM_TYPES = conformance.SUPPORTED_ELEM_TYPES | {TensorProto.UINT8, TensorProto.INT8}

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
    return conformance.DTYPE_REASON.format(names=", ".join(bad)) if bad else None


PARAMS = [pytest.param(c, id=c.name, marks=[pytest.mark.skip(reason=r)] if (r := _reason(c)) else [])
          for c in conformance.cases_for(OP_TYPES)]


@pytest.mark.parametrize("case", PARAMS)
def test_case(case):
    conformance.run_case(case)


def test_every_op_runs():
    conformance.assert_each_op_runs(OP_TYPES, PARAMS)
