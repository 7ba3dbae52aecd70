"""ONNX backend node conformance for reductions, ArgMax/ArgMin, Softmax, Hardmax, CumSum, TopK (ops/reduce.py)."""
from __future__ import annotations

import pytest

from tests.edge_runtime import conformance

OP_TYPES = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1",
            "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin", "Softmax", "LogSoftmax",
            "CumSum", "TopK", "Hardmax")

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, -2, -3, 0, 2])
def test_opset11_softmax_coerces_at_negative_axes_like_onnxruntime(op, axis):
    import numpy as np
    from onnx import TensorProto, helper

    import edge_runtime

    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(abs(axis)).standard_normal((3, 4, 5)).astype(np.float32)
    info = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], axis=axis)], "g", [info("x", TensorProto.FLOAT, None)],
                              [info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]).SerializeToString()
    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    (got,) = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
