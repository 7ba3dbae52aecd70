"""Detection decoding + class-wise NMS against plain loops and against onnxruntime's NonMaxSuppression."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edge_runtime.errors import InvalidInputError
from edge_runtime.tasks.detection import candidates, decode
from edge_runtime.tasks.spec import DetectionSpec


def clustered(rng: np.random.Generator, n: int, classes: int, size: float = 64.0):
    """Boxes (n, 4) cx cy w h in clusters (so NMS has work) and class scores (n, classes)."""
    centres = rng.uniform(8, size - 8, (6, 2))
    pick = rng.integers(0, 6, n)
    cxcy = centres[pick] + rng.normal(0, 1.5, (n, 2))
    wh = rng.uniform(6, 14, (n, 2))
    scores = rng.uniform(0, 1, (n, classes)) ** 3
    return np.concatenate([cxcy, wh], 1), scores


def reference(boxes_xyxy, scores, thr, iou_thr, limit):
    """Best class per box, threshold, then greedy NMS per class, written with loops."""
    found = []
    for i in range(len(boxes_xyxy)):
        k = max(range(scores.shape[1]), key=lambda c: (scores[i][c], -c))
        if scores[i][k] > thr:
            found.append((float(scores[i][k]), i, k))
    kept = []
    for score, i, k in sorted(found, key=lambda t: (-t[0], t[1])):
        ok = True
        for _, j, kj in kept:
            if kj != k:
                continue
            a, b = boxes_xyxy[i], boxes_xyxy[j]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if union > 0 and inter / union > iou_thr:
                ok = False
                break
        if ok:
            kept.append((score, i, k))
    return kept[:limit]


def to_xyxy(cxcywh):
    return np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)


@pytest.mark.parametrize("seed", range(4))
def test_yolo_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    boxes, scores = clustered(rng, 300, 5)
    out = np.concatenate([boxes, scores], 1).T[None]  # (1, 4 + C, N)
    spec = DetectionSpec(output="y", layout="yolo", score_threshold=0.3, iou_threshold=0.5, max_detections=50)
    got = decode({"y": out.astype(np.float32)}, spec, (128, 96), (64, 64))  # image 96 wide, 128 high
    ref = reference(to_xyxy(boxes), scores, 0.3, 0.5, 50)
    assert len(got) == len(ref) > 5
    scale = np.array([96 / 64, 128 / 64] * 2)
    expected = np.clip(to_xyxy(boxes)[[i for _, i, _ in ref]] * scale, 0, [96, 128, 96, 128])
    np.testing.assert_allclose(got.boxes, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.scores, [s for s, _, _ in ref], rtol=1e-6)
    assert got.classes.tolist() == [k for _, _, k in ref]


def test_yolo_obj_multiplies_objectness_and_limits():
    rng = np.random.default_rng(7)
    boxes, scores = clustered(rng, 200, 3)
    obj = rng.uniform(0, 1, (200, 1))
    out = np.concatenate([boxes, obj, scores], 1)[None]  # (1, N, 5 + C)
    spec = DetectionSpec(output="y", layout="yolo_obj", score_threshold=0.1, iou_threshold=0.4, max_detections=7)
    got = decode({"y": out}, spec, (64, 64))
    ref = reference(to_xyxy(boxes), scores * obj, 0.1, 0.4, 7)
    assert len(got) == 7
    np.testing.assert_allclose(got.scores, [s for s, _, _ in ref], rtol=1e-6)
    np.testing.assert_allclose(got.boxes, np.clip(to_xyxy(boxes)[[i for _, i, _ in ref]], 0, 64), atol=1e-4)


def test_ssd_normalized_xyxy_matches_loop_reference():
    rng = np.random.default_rng(3)
    boxes, scores = clustered(rng, 150, 4, size=1.0 * 64)
    xyxy = to_xyxy(boxes) / 64.0
    swapped = xyxy[:, [2, 3, 0, 1]]  # corners in either order are accepted
    spec = DetectionSpec(output="b", scores_output="s", layout="ssd", box_format="xyxy", coordinates="normalized",
                         score_threshold=0.2, iou_threshold=0.45)
    got = decode({"b": swapped[None], "s": scores[None]}, spec, (480, 640))
    ref = reference(xyxy, scores, 0.2, 0.45, 100)
    expected = np.clip(xyxy[[i for _, i, _ in ref]] * [640, 480, 640, 480], 0, [640, 480, 640, 480])
    np.testing.assert_allclose(got.boxes, expected, rtol=1e-5, atol=1e-3)
    assert got.classes.tolist() == [k for _, _, k in ref]


def test_ssd_background_column_is_never_a_detection():
    rng = np.random.default_rng(4)
    boxes, scores = clustered(rng, 120, 4)
    scores[:, 0] += 0.5  # "no object" often wins
    spec = DetectionSpec(output="b", scores_output="s", layout="ssd", background=0, score_threshold=0.2)
    got = decode({"b": boxes[None], "s": scores[None]}, spec, (64, 64))
    no_background = scores.copy()
    no_background[:, 0] = -1
    ref = reference(to_xyxy(boxes), no_background, 0.2, 0.45, 100)
    assert 0 not in got.classes.tolist() and got.classes.tolist() == [k for _, _, k in ref] and len(ref) > 3
    with pytest.raises(InvalidInputError, match="background=7"):
        decode({"b": boxes[None], "s": scores[None]}, DetectionSpec(output="b", scores_output="s", layout="ssd",
                                                                    background=7), (64, 64))


def _ort_nms(boxes, scores, limit, iou, thr):
    """onnxruntime running a graph with NonMaxSuppression (boxes (1, N, 4) xyxy, scores (1, C, N))."""
    ort = pytest.importorskip("onnxruntime")
    consts = [helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, [1], [value]))
              for name, dtype, value in (("limit", TensorProto.INT64, limit), ("iou", TensorProto.FLOAT, iou),
                                         ("thr", TensorProto.FLOAT, thr))]
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "limit", "iou", "thr"], ["selected"])
    graph = helper.make_graph(consts + [node], "nms", [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, None, None])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"boxes": boxes.astype(np.float32), "scores": scores.astype(np.float32)})[0]


@pytest.mark.parametrize("seed", range(3))
def test_same_boxes_as_onnxruntime_nms(seed):
    rng = np.random.default_rng(10 + seed)
    boxes, scores = clustered(rng, 400, 6)
    scores = scores.astype(np.float32)
    spec = DetectionSpec(output="y", layout="yolo", score_threshold=0.25, iou_threshold=0.5, max_detections=1000)
    got = decode({"y": np.concatenate([boxes, scores], 1).T[None].astype(np.float32)}, spec, (64, 64))
    xyxy, _ = candidates({"y": np.concatenate([boxes, scores], 1).T[None].astype(np.float32)}, spec)
    best = scores.argmax(1)
    masked = np.where(np.arange(6)[None] == best[:, None], scores, 0).T[None]  # (1, C, N): each box's best class
    selected = _ort_nms(xyxy[None], masked, 1000, 0.5, 0.25)
    assert len(selected) == len(got) > 10
    picked = selected[np.lexsort((selected[:, 2], -scores[selected[:, 2], selected[:, 1]]))]  # best first
    np.testing.assert_allclose(got.scores, scores[picked[:, 2], picked[:, 1]])
    assert got.classes.tolist() == picked[:, 1].tolist()
    np.testing.assert_allclose(got.boxes, np.clip(xyxy[picked[:, 2]], 0, 64), atol=1e-4)


def test_bad_outputs_are_one_line():
    spec = DetectionSpec(output="y", layout="yolo")
    with pytest.raises(InvalidInputError, match="no output 'y'"):
        decode({"z": np.zeros((1, 6, 10))}, spec, (8, 8))
    with pytest.raises(InvalidInputError, match="expected 4 \\+ classes"):
        decode({"y": np.zeros((1, 4, 10))}, spec, (8, 8))
    with pytest.raises(InvalidInputError, match="rank 3"):
        decode({"y": np.zeros((2, 6, 10))}, spec, (8, 8))
    assert len(decode({"y": np.zeros((1, 6, 10))}, spec, (8, 8))) == 0
