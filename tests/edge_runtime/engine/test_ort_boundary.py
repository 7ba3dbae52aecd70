"""What onnxruntime cannot run for the onnxruntime engine: tensors its Python API cannot exchange
go to the numba engine, and a failure while running is the project's one-line error."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edge_runtime
from edge_runtime.engine import ort as ortx
from edge_runtime.errors import ExecutionError

pytest.importorskip("onnxruntime")

ORT = ["CPUExecutionProvider"]


def _cast_model(src: int, dst: int) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=dst)], "cast",
                              [helper.make_tensor_value_info("x", src, [2, 3])],
                              [helper.make_tensor_value_info("y", dst, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("src, dst, in_dtype", [
    (TensorProto.FLOAT, TensorProto.BFLOAT16, np.float32),
    (TensorProto.BFLOAT16, TensorProto.FLOAT, ml_dtypes.bfloat16),
    (TensorProto.FLOAT, TensorProto.FLOAT8E4M3FN, np.float32),
    (TensorProto.INT4, TensorProto.FLOAT, ml_dtypes.int4),
])
def test_types_onnxruntime_cannot_exchange_run_on_the_numba_engine(src: int, dst: int, in_dtype: type) -> None:
    x = np.array([[0.5, -1.25, 3.0], [7.0, -2.0, 1.0]], dtype=np.float32).astype(in_dtype)
    sess = edge_runtime.InferenceSession(_cast_model(src, dst).SerializeToString(), providers=ORT)
    assert sess.dense_engine == "numba"
    (y,) = sess.run(None, {"x": x})
    want = x.astype(helper.tensor_dtype_to_np_dtype(dst))
    assert y.dtype == want.dtype
    np.testing.assert_array_equal(y.astype(np.float32), want.astype(np.float32))


def test_exchanged_types_stay_on_onnxruntime() -> None:
    sess = edge_runtime.InferenceSession(_cast_model(TensorProto.FLOAT, TensorProto.FLOAT16).SerializeToString(),
                                         providers=ORT)
    assert sess.dense_engine == "onnxruntime"


def test_check_exchanged_names_the_tensor_and_type() -> None:
    ortx.check_exchanged([("a", TensorProto.FLOAT), ("b", TensorProto.UINT8)], "cut")
    with pytest.raises(ortx.OnnxRuntimeRejected, match=r"'b' of type BFLOAT16"):
        ortx.check_exchanged([("a", TensorProto.FLOAT), ("b", TensorProto.BFLOAT16)], "cut")


def _conv_integer_per_channel() -> onnx.ModelProto:
    """ConvInteger with a per-output-channel weight zero point: valid ONNX that onnxruntime's
    CPU kernel refuses when it runs ("Non per-tensor quantization is not supported now")."""
    w = np.array([[[[1, 2], [3, 4]]], [[[4, 3], [2, 1]]]], dtype=np.uint8)
    graph = helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"])], "ci",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2, 2, 2])],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.uint8(1), "xz"),
         onnx.numpy_helper.from_array(np.array([1, 2], np.uint8), "wz")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_onnxruntime_failing_at_run_is_one_line_naming_the_other_engine() -> None:
    model = _conv_integer_per_channel().SerializeToString()
    x = np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3)
    sess = edge_runtime.InferenceSession(model, providers=ORT)
    with pytest.raises(ExecutionError) as info:
        sess.run(None, {"x": x})
    message = str(info.value)
    assert "\n" not in message and "per-tensor" in message
    assert "providers=['EdgeRuntimeExecutionProvider']" in message
    (y,) = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).run(None, {"x": x})
    xc = x.astype(np.int32) - 1
    wc = np.array([[[[1, 2], [3, 4]]], [[[4, 3], [2, 1]]]], np.int32) - np.array([1, 2], np.int32)[:, None, None, None]
    want = np.array([[[[(xc[0, 0, i:i + 2, j:j + 2] * wc[k, 0]).sum() for j in range(2)] for i in range(2)]
                      for k in range(2)]], np.int32)
    np.testing.assert_array_equal(y, want)
