"""ONNX backend conformance for RoiAlign (ops/roi_align.py), and parity with onnxruntime on random RoIs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

import edge_runtime
from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.ops.roi_align import RoiAlign
from tests.edge_runtime import conformance

OP_TYPES = ("RoiAlign",)

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)


def _model(opset: int, **attrs: object) -> bytes:
    info = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], **attrs)], "roi",
                              [info("x", TensorProto.FLOAT, None), info("rois", TensorProto.FLOAT, None),
                               info("idx", TensorProto.INT64, None)], [info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _feed(seed: int) -> dict[str, np.ndarray]:
    """Feature maps and RoIs of every kind: inside, across the border, far outside, inverted, tiny."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(-4, 34, (40, 2))
    size = rng.uniform(0, 25, (40, 2))
    rois = np.concatenate([corner, corner + size], 1).astype(np.float32)
    rois[:3, 2:] = rois[:3, :2] - 1                  # x2 < x1, y2 < y1
    rois[3] = [40, 40, 50, 50]                       # wholly outside the 31x23 map
    rois[4] = [5, 5, 5.1, 5.1]                       # smaller than a pixel
    return {"x": rng.standard_normal((2, 5, 23, 31)).astype(np.float32), "rois": rois,
            "idx": rng.integers(0, 2, 40).astype(np.int64)}


COMBOS = [dict(opset=o, ctm=c, mode=m, sampling_ratio=s, spatial_scale=sc)
          for o, c, m, s, sc in itertools.product((10, 16), ("half_pixel", "output_half_pixel"), ("avg", "max"),
                                                  (0, 2), (1.0, 0.5))
          if not (o == 10 and c == "half_pixel")]  # opset 10 has no transform attribute (it is output_half_pixel)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_roi_align_matches_onnxruntime(combo):
    ort = pytest.importorskip("onnxruntime")
    attrs = dict(mode=combo["mode"], sampling_ratio=combo["sampling_ratio"], spatial_scale=combo["spatial_scale"],
                 output_height=7, output_width=5)
    if combo["opset"] == 16:
        attrs["coordinate_transformation_mode"] = combo["ctm"]
    model, feed = _model(combo["opset"], **attrs), _feed(combo["sampling_ratio"])
    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    (got,) = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).run(None, feed)
    assert got.shape == (40, 5, 7, 5) and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_roi_align_float64_and_empty_rois():
    feed = _feed(1)
    x64 = feed["x"].astype(np.float64)
    got = RoiAlign(x64, feed["rois"].astype(np.float64), feed["idx"], output_height=3, output_width=3)
    want = RoiAlign(feed["x"], feed["rois"], feed["idx"], output_height=3, output_width=3)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    empty = RoiAlign(feed["x"], np.zeros((0, 4), np.float32), np.zeros(0, np.int64), output_height=2, output_width=2)
    assert empty.shape == (0, 5, 2, 2)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_batches_rois_by_grid_size_without_mixing_them(mode):
    """Adaptive sampling gives RoIs different grids: batched by grid size, each lands in its own row."""
    feed = _feed(3)
    args = dict(mode=mode, output_height=4, output_width=3, sampling_ratio=0, spatial_scale=0.5)
    got = RoiAlign(feed["x"], feed["rois"], feed["idx"], **args)
    one_by_one = np.concatenate([RoiAlign(feed["x"], feed["rois"][i:i + 1], feed["idx"][i:i + 1], **args)
                                 for i in range(len(feed["rois"]))])
    sizes = np.ceil((feed["rois"][:, 2:] - feed["rois"][:, :2]) * 0.5 / [3, 4])
    assert len({tuple(g) for g in sizes[(sizes > 0).all(1)]}) > 3  # several grid sizes in one call
    np.testing.assert_array_equal(got, one_by_one)


def test_roi_align_errors_name_the_problem():
    feed = _feed(0)
    with pytest.raises(InvalidInputError, match=r"batch_indices in \[7, 7\] for a batch of 2; expected \[0, 1\]"):
        RoiAlign(feed["x"], feed["rois"][:1], np.array([7], np.int64))
    with pytest.raises(InvalidInputError, match=r"rois \(40, 3\)"):
        RoiAlign(feed["x"], feed["rois"][:, :3], feed["idx"])
    with pytest.raises(InvalidModelError, match="coordinate_transformation_mode 'aligned'"):
        RoiAlign(feed["x"], feed["rois"], feed["idx"], coordinate_transformation_mode="aligned")
    with pytest.raises(InvalidModelError, match="mode 'median'"):
        RoiAlign(feed["x"], feed["rois"], feed["idx"], mode="median")


def _poison(x: np.ndarray, seed: int) -> np.ndarray:
    """A copy with 6 NaN, 3 +Inf and 3 -Inf pixels, one of them at (0, 0) where outside samples read."""
    x = x.copy()
    flat = x.reshape(-1)
    where = np.random.default_rng(seed).choice(flat.size, 12, replace=False)
    where[0] = 0
    flat[where[:6]], flat[where[6:9]], flat[where[9:]] = np.nan, np.inf, -np.inf
    return x


@pytest.mark.parametrize("mode,sampling_ratio", [("avg", 0), ("avg", 2), ("max", 0), ("max", 2)])
def test_roi_align_nan_and_inf_reach_the_bins_onnxruntime_reaches(mode, sampling_ratio):
    ort = pytest.importorskip("onnxruntime")
    feed = _feed(3)
    feed["x"] = _poison(feed["x"], 3)
    attrs = dict(mode=mode, sampling_ratio=sampling_ratio, output_height=5, output_width=4)
    (want,) = ort.InferenceSession(_model(16, **attrs), providers=["CPUExecutionProvider"]).run(None, feed)
    got = RoiAlign(feed["x"], feed["rois"], feed["idx"], **attrs)
    assert 0 < np.isnan(want).sum() < want.size // 10   # NaN reaches some bins, not whole RoIs
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # NaN positions and Infs must agree


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_roi_align_nan_or_inf_rois_give_zero_bins_without_warnings(sampling_ratio):
    feed = _feed(4)
    rois = np.array([[np.nan, 1, 3, 4], [1, 1, np.inf, 4], [1, 1, 3, 4]], np.float32)
    got = RoiAlign(feed["x"], rois, np.zeros(3, np.int64), sampling_ratio=sampling_ratio, output_height=2,
                   output_width=2)
    assert not got[:2].any() and np.abs(got[2]).max() > 0
