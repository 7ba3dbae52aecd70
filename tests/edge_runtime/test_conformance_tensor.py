"""ONNX backend conformance for the tensor/shape/indexing op families.

Ops live in edge_runtime/ops/tensor.py, shape.py and indexing.py.
"""
from __future__ import annotations

import pytest

from tests.edge_runtime import conformance

OP_TYPES = (
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
    "ScatterND", "ScatterElements", "Scatter", "Shape", "Size", "Expand", "Squeeze", "Unsqueeze",
    "Flatten", "Constant", "ConstantOfShape", "Range", "Tile", "Pad", "Trilu", "NonZero", "OneHot",
    "DepthToSpace", "SpaceToDepth", "EyeLike", "Einsum",
)

EXCLUSIONS: dict[str, str] = {}

# Split without sizes (opset 13) needs its node's output count, which the planner passes in
# through the Split builder; the harness's direct mode calls bare implementations.
_SPLIT_NEEDS_BUILDER = ("test_split_equal_parts_1d_opset13", "test_split_equal_parts_2d_opset13",
                        "test_split_equal_parts_default_axis_opset13")
if conformance.runner() is conformance.run_direct:
    EXCLUSIONS.update({name: "direct mode: Split needs the planner's builder to know its output count"
                       for name in _SPLIT_NEEDS_BUILDER})

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


@pytest.mark.parametrize("case", PARAMS)
def test_case(case):
    conformance.run_case(case)


def test_every_op_runs():
    # Einsum's backend cases are all float64/bfloat16: test_einsum_in_float32 covers it.
    conformance.assert_each_op_runs([op for op in OP_TYPES if op != "Einsum"], PARAMS)


def _as_float32_case(case):
    """A copy of a float64 case with its float64 inputs/outputs converted to float32."""
    import copy

    import numpy as np
    from onnx import TensorProto

    model = copy.deepcopy(case.model)
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.DOUBLE:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT

    def conv(values):
        return [np.asarray(v).astype(np.float32) if np.asarray(v).dtype == np.float64 else v for v in values]

    data_sets = [(conv(inputs), conv(outputs)) for inputs, outputs in case.data_sets]
    return model, data_sets


# The backend's Einsum cases are all float64/bfloat16; run the float64 ones in float32.
EINSUM_F32 = [c for c in conformance.cases_for(["Einsum"]) if "bfloat16" not in c.name]


@pytest.mark.parametrize("case", EINSUM_F32, ids=[c.name for c in EINSUM_F32])
def test_einsum_in_float32(case):
    model, data_sets = _as_float32_case(case)
    for inputs, expected in data_sets:
        got = conformance.runner()(model, conformance._feed(model, inputs))
        conformance.assert_outputs_match(case, got, expected)


def test_einsum_cases_exist():
    assert len(EINSUM_F32) >= 5
