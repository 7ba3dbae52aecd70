"""ONNX backend conformance for the tensor/shape/indexing op families.

Ops live in edge_runtime/ops/tensor.py, shape.py and indexing.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.edge_runtime import conformance

OP_TYPES = (
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
    "ScatterND", "ScatterElements", "Scatter", "Shape", "Size", "Expand", "Squeeze", "Unsqueeze",
    "Flatten", "Constant", "ConstantOfShape", "Range", "Tile", "Pad", "Trilu", "NonZero", "OneHot",
    "DepthToSpace", "SpaceToDepth", "EyeLike", "Einsum", "Compress", "ReverseSequence",
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


# Einsum's backend cases are all float64/bfloat16: test_einsum_in_float32 covers it.
test_case, test_every_op_runs = conformance.family_tests([op for op in OP_TYPES if op != "Einsum"], PARAMS)


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


# ------------------------------------------------------------------ dtypes and edge cases
# The backend cases are mostly float32; layout ops must behave identically on every dtype
# the runtime moves around. Oracle: onnxruntime (it accepts negative pads, which the ONNX
# reference evaluator does not).

DTYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "int32": TensorProto.INT32,
          "bool": TensorProto.BOOL, "uint8": TensorProto.UINT8}

I64_MAX = np.iinfo(np.int64).max
I64_MIN = np.iinfo(np.int64).min

# (op, extra int64 constant inputs, attributes)
LAYOUT_CASES = [
    ("Reshape", {"shape": [0, -1, 2]}, {}),
    ("Transpose", {}, {"perm": [2, 0, 1]}),
    ("Slice", {"starts": [I64_MAX, 1], "ends": [I64_MIN, 100], "axes": [2, -2], "steps": [-2, 2]}, {}),
    ("Slice", {"starts": [-100], "ends": [-1], "axes": [0], "steps": [1]}, {}),
    ("Gather", {"indices": [[0, -1], [2, 1]]}, {"axis": 1}),
    ("GatherElements", {"indices": np.zeros((2, 4, 4), np.int64) - 1}, {"axis": 2}),
    ("Expand", {"shape": [2, 1, 1, 1]}, {}),
    ("Tile", {"repeats": [1, 2, 3]}, {}),
    ("Pad", {"pads": [0, 1, -1, 1, 0, 2]}, {"mode": "constant"}),
    ("Pad", {"pads": [1, 2, 0, 0, 1, 3]}, {"mode": "reflect"}),
    ("Pad", {"pads": [1, 2, 2, 0, 1, 3]}, {"mode": "edge"}),
    ("Pad", {"pads": [1, 2, 2, 0, 1, 3]}, {"mode": "wrap"}),
    ("Unsqueeze", {"axes": [-1, 0]}, {}),
    ("Flatten", {}, {"axis": -1}),
    ("Concat", {}, {"axis": -1}),
    ("Trilu", {"k": [1]}, {"upper": 0}),
]


def _layout_model(op, consts, attrs, elem):
    x = helper.make_tensor_value_info("x", elem, [3, 4, 4])
    y = helper.make_tensor_value_info("y", elem, None)
    inits = [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in consts.items()]
    inputs = ["x", "x"] if op == "Concat" else ["x", *consts]
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,consts,attrs", LAYOUT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(LAYOUT_CASES)])
def test_layout_ops_on_every_dtype(op, consts, attrs, dtype):
    ort = pytest.importorskip("onnxruntime")
    if op == "Trilu" and dtype in ("int32", "uint8"):
        pytest.skip("onnxruntime has no Trilu kernel for this dtype")
    model = _layout_model(op, consts, attrs, DTYPES[dtype])
    x = (np.arange(48).reshape(3, 4, 4) % 7).astype(dtype)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - the oracle lacks this type/op combination
        pytest.skip(f"onnxruntime cannot build {op} for {dtype}: {str(exc)[:80]}")
    expected = sess.run(None, {"x": x})[0]
    got = np.asarray(conformance.runner()(model, {"x": x})[0])
    assert got.dtype == expected.dtype, f"{op}: dtype {got.dtype}, expected {expected.dtype}"
    np.testing.assert_array_equal(got, expected)


def test_split_equal_parts_via_builder():
    """Split without sizes learns its output count from the planner's builder (opset 18: uneven)."""
    from edge_runtime.graph import Node
    from edge_runtime.ops.registry import resolve

    impl, builder = resolve("", "Split", 18)
    assert builder is not None
    node = Node("Split", ("x",), ("a", "b", "c"), {"axis": 0})
    parts = builder(node, [None], None)(np.arange(7))
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]


def test_shape_errors_are_clear():
    from edge_runtime.errors import InvalidInputError
    from edge_runtime.ops.tensor import Reshape

    with pytest.raises(InvalidInputError, match=r"cannot reshape a tensor of shape \(2, 3\)"):
        Reshape(np.zeros((2, 3)), np.array([4, -1], np.int64))
