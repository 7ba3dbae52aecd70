"""numpy scalars and 0-d arrays as inputs (InferenceSession._check_value), against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edge_runtime import InferenceSession, InvalidInputError

ort = pytest.importorskip("onnxruntime")


def _clip_model(lo_shape: list | None) -> bytes:
    g = helper.make_graph([helper.make_node("Clip", ["x", "lo"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                           helper.make_tensor_value_info("lo", TensorProto.FLOAT, lo_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("lo_shape", [[], None])
@pytest.mark.parametrize("lo", [np.float32(0.5), np.array(0.5, np.float32)], ids=["numpy_scalar", "0d_array"])
def test_scalar_and_0d_inputs_run_like_onnxruntime(lo_shape, lo):
    model = _clip_model(lo_shape)
    x = np.array([0.0, 1.0, 2.0], np.float32)
    (got,) = InferenceSession(model).run(None, {"x": x, "lo": lo})
    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "lo": np.asarray(lo)})
    np.testing.assert_array_equal(got, want)


def test_int64_scalar_input_and_wrong_dtype_scalar():
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.INT64, []),
                           helper.make_tensor_value_info("b", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    sess = InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    (y,) = sess.run(None, {"a": np.int64(3), "b": np.array([1, 2], np.int64)})
    np.testing.assert_array_equal(y, [4, 5])
    with pytest.raises(InvalidInputError, match="dtype"):
        sess.run(None, {"a": np.float64(3), "b": np.array([1, 2], np.int64)})


def test_python_scalars_still_ask_for_an_array():
    with pytest.raises(InvalidInputError, match="numpy array"):
        InferenceSession(_clip_model([])).run(None, {"x": np.zeros(3, np.float32), "lo": 0.5})
