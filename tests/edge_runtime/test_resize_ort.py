"""Resize/Upsample values against onnxruntime, focused on U-Net upsampling (NCHW float32).

Values only: timings live in benchmarks/. Each case builds a one-node model, runs it in
onnxruntime and through edge_runtime's op implementation, and compares.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.ops import resize as resize_mod
from edge_runtime.ops import resize_kernels
from edge_runtime.ops.resize import Resize, Resize_10, Resize_11, Upsample

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(0)


def _model(op: str, opset: int, inputs: list[str], consts: dict[str, np.ndarray], rank: int,
           **attrs: object) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None] * rank)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in consts.items()]
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _resize_pair(x, *, scales=None, sizes=None, opset=19, **attrs):
    """(onnxruntime output, edge_runtime output) for one Resize node."""
    consts: dict[str, np.ndarray] = {}
    inputs = ["x", "", ""]
    if scales is not None:
        consts["scales"] = np.asarray(scales, np.float32)
        inputs[2] = "scales"
    if sizes is not None:
        consts["sizes"] = np.asarray(sizes, np.int64)
        inputs = ["x", "", "", "sizes"]
    expected = _ort(_model("Resize", opset, inputs, consts, x.ndim, **attrs), x)
    got = Resize(x, None, consts.get("scales"), consts.get("sizes"), **attrs)
    return expected, got


UNET_SHAPES = [(1, 64, 32, 32), (2, 16, 17, 9), (1, 3, 1, 5)]


@pytest.mark.parametrize("shape", UNET_SHAPES)
@pytest.mark.parametrize("ctm,nearest_mode", [
    ("asymmetric", "floor"),  # torch nn.Upsample(mode="nearest") export
    ("half_pixel", "round_prefer_floor"),  # ONNX defaults
    ("half_pixel", "round_prefer_ceil"),
    ("align_corners", "round_prefer_ceil"),
    ("pytorch_half_pixel", "ceil"),
])
def test_nearest_2x_matches_ort(shape, ctm, nearest_mode):
    x = RNG.standard_normal(shape).astype(np.float32)
    expected, got = _resize_pair(x, scales=[1, 1, 2, 2], mode="nearest", coordinate_transformation_mode=ctm,
                                 nearest_mode=nearest_mode)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", UNET_SHAPES)
@pytest.mark.parametrize("ctm", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                                 "half_pixel_symmetric"])
def test_bilinear_2x_matches_ort(shape, ctm):
    x = RNG.standard_normal(shape).astype(np.float32)
    expected, got = _resize_pair(x, scales=[1, 1, 2, 2], mode="linear", coordinate_transformation_mode=ctm)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("sizes", [(1, 4, 24, 40), (1, 4, 7, 5), (1, 4, 12, 21)])
def test_sizes_up_and_down_match_ort(mode, sizes):
    x = RNG.standard_normal((1, 4, 12, 20)).astype(np.float32)
    expected, got = _resize_pair(x, sizes=sizes, mode=mode, coordinate_transformation_mode="half_pixel")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scales", [(1, 1, 3, 3), (1, 1, 1.5, 0.5), (1, 1, 2, 1), (1, 1, 0.5, 0.5)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_other_scales_match_ort(scales, mode):
    x = RNG.standard_normal((1, 5, 10, 12)).astype(np.float32)
    expected, got = _resize_pair(x, scales=scales, mode=mode, coordinate_transformation_mode="asymmetric")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_trilinear_3d_matches_ort():
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32)
    expected, got = _resize_pair(x, scales=[2, 1.5, 0.6], mode="linear")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_linear_on_batch_and_channel_axes_matches_reference():
    """onnxruntime refuses linear resizing of N and C; the ONNX reference evaluator is the oracle."""
    from onnx.reference import ReferenceEvaluator

    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    scales = np.array([2, 1.5, 1, 2], np.float32)
    model = _model("Resize", 19, ["x", "", "scales"], {"scales": scales}, 4, mode="linear")
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(Resize(x, None, scales, mode="linear"), expected, rtol=1e-5, atol=1e-5)


def test_resize_10_matches_ort():
    x = RNG.standard_normal((1, 2, 5, 7)).astype(np.float32)
    scales = np.array([1, 1, 2, 3], np.float32)
    for mode in ("nearest", "linear"):
        expected = _ort(_model("Resize", 10, ["x", "scales"], {"scales": scales}, 4, mode=mode), x)
        np.testing.assert_allclose(Resize_10(x, scales, mode=mode), expected, rtol=1e-5, atol=1e-5)


def test_upsample_9_matches_ort():
    x = RNG.standard_normal((1, 2, 5, 7)).astype(np.float32)
    scales = np.array([1, 1, 2, 2], np.float32)
    for mode in ("nearest", "linear"):
        expected = _ort(_model("Upsample", 9, ["x", "scales"], {"scales": scales}, 4, mode=mode), x)
        np.testing.assert_allclose(Upsample(x, scales, mode=mode), expected, rtol=1e-5, atol=1e-5)


def test_resize_11_tf_crop_and_resize_matches_ort():
    x = RNG.standard_normal((1, 1, 6, 6)).astype(np.float32)
    roi = np.array([0, 0, 0.2, 0.1, 1, 1, 1.3, 0.9], np.float32)
    sizes = np.array([1, 1, 5, 4], np.int64)
    empty = np.zeros(0, np.float32)  # opset 11: scales is required, empty when sizes is given
    model = _model("Resize", 11, ["x", "roi", "scales", "sizes"], {"roi": roi, "scales": empty, "sizes": sizes}, 4,
                   mode="linear",
                   coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-3.0)
    expected = _ort(model, x)
    got = Resize_11(x, roi, empty, sizes, mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
                    extrapolation_value=-3.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (got == -3.0).any()  # the ROI reaches outside the image


def test_fast_paths_are_taken(monkeypatch):
    """The U-Net cases must not fall back to the generic numpy path."""
    def fail(*args, **kwargs):
        raise AssertionError("generic path used")

    monkeypatch.setattr(resize_kernels, "_filter_axis", fail)
    monkeypatch.setattr(resize_kernels, "_repeat_copy", fail)
    x = RNG.standard_normal((1, 8, 6, 6)).astype(np.float32)
    assert Resize(x, None, np.array([1, 1, 2, 2], np.float32), mode="linear").shape == (1, 8, 12, 12)
    near = Resize(x, None, np.array([1, 1, 2, 2], np.float32), mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    np.testing.assert_array_equal(near, x.repeat(2, axis=2).repeat(2, axis=3))


def test_integer_data_keeps_dtype():
    x = np.arange(24, dtype=np.int64).reshape(1, 1, 4, 6)
    out = Resize(x, None, np.array([1, 1, 2, 2], np.float32), mode="nearest")
    assert out.dtype == np.int64 and out.shape == (1, 1, 8, 12)
    lin = resize_mod.resize(x, None, [1, 1, 0.5, 0.5], mode="linear")
    assert lin.dtype == np.int64 and lin.shape == (1, 1, 2, 3)


def test_bad_arguments_raise_clear_errors():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(InvalidInputError, match="scales"):
        Resize(x, None, np.array([2, 2], np.float32))
    with pytest.raises(InvalidModelError, match="mode 'bicubic'"):
        Resize(x, None, np.array([1, 1, 2, 2], np.float32), mode="bicubic")
    with pytest.raises(InvalidModelError, match="coordinate_transformation_mode"):
        Resize(x, None, np.array([1, 1, 2, 2], np.float32), coordinate_transformation_mode="center")
    with pytest.raises(InvalidModelError, match="antialias"):
        Resize(x, None, np.array([1, 1, 0.5, 0.5], np.float32), antialias=1)
