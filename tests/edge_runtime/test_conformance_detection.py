"""ONNX backend node conformance for detection post-processing (ops/detection.py)."""
from __future__ import annotations

import pytest

from tests.edge_runtime import conformance

OP_TYPES = ("NonMaxSuppression",)

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)


@pytest.mark.parametrize("center", [0, 1])
def test_nms_matches_onnxruntime_on_random_boxes(center):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import edge_runtime

    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(center)
    xy = rng.uniform(0, 50, (2, 200, 2)).astype(np.float32)
    wh = rng.uniform(2, 20, (2, 200, 2)).astype(np.float32)
    boxes = np.concatenate([xy, wh], -1) if center else np.concatenate([xy[..., ::-1], xy[..., ::-1] + wh], -1)
    scores = np.round(rng.random((2, 3, 200)), 2).astype(np.float32)  # rounded: many ties
    consts = [numpy_helper.from_array(np.array([15], np.int64), "m"), numpy_helper.from_array(np.array([0.4], np.float32), "i"),
              numpy_helper.from_array(np.array([0.2], np.float32), "s")]
    g = helper.make_graph([helper.make_node("NonMaxSuppression", ["b", "sc", "m", "i", "s"], ["y"],
                                            center_point_box=center)], "nms",
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, boxes.shape),
                           helper.make_tensor_value_info("sc", TensorProto.FLOAT, scores.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, None)], consts)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]).SerializeToString()
    feed = {"b": boxes, "sc": scores}
    (ours,) = edge_runtime.InferenceSession(model).run(None, feed)
    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    assert len(ours) > 40
    np.testing.assert_array_equal(ours, want)
