"""ONNX backend node conformance for Conv and ConvTranspose (edge_runtime/ops/conv.py).

Besides onnx's generated cases, hand-written cases with constant weights exercise the
plan-time builders and the planner's Conv+activation fusion into FusedConv (MobileNet
depthwise + Clip, ResNet Conv + Relu, U-Net ConvTranspose 2x2 stride 2); their expected
outputs come from onnx's reference evaluator.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.edge_runtime import conformance

OP_TYPES = ("Conv", "ConvTranspose")

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}


def _const(name: str, value: np.ndarray):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _case(name: str, nodes: list, x: np.ndarray) -> object:
    """A case whose expected output is onnx.reference's result on the same graph."""
    from onnx.reference import ReferenceEvaluator

    probe = conformance.make_case(name, nodes, {"x": x}, {"y": np.zeros(1, np.float32)})
    graph = probe.model.graph
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", 1, None))
    expected = ReferenceEvaluator(probe.model).run(None, {"x": x})[0]
    return conformance.make_case(name, nodes, {"x": x}, {"y": expected}, rtol=1e-4, atol=1e-4)


def _extra_cases() -> list:
    rng = np.random.default_rng(7)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    cases = [_case("test_conv_relu_fused_resnet_block", [
        _const("w", r(8, 4, 3, 3)), _const("b", r(8)),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"])], r(2, 4, 9, 10))]
    cases.append(_case("test_conv_depthwise_clip_fused_mobilenet", [
        _const("w", r(6, 1, 3, 3)), _const("b", r(6)), _const("lo", np.array(0, np.float32)),
        _const("hi", np.array(6, np.float32)),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], group=6, strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["y"])], 3 * r(1, 6, 11, 12)))
    cases.append(_case("test_conv_grouped_dilated_leakyrelu_fused", [
        _const("w", r(6, 2, 3, 3)),
        helper.make_node("Conv", ["x", "w"], ["c"], group=2, dilations=[2, 1], pads=[2, 0, 1, 1]),
        helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.2)], r(1, 4, 10, 8)))
    cases.append(_case("test_conv_1x1_strided_const_weights", [
        _const("w", r(5, 4, 1, 1)), _const("b", r(5)),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2])], r(2, 4, 9, 8)))
    cases.append(_case("test_convtranspose_unet_2x2_stride2_const_weights", [
        _const("w", r(8, 4, 2, 2)), _const("b", r(4)),
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2])], r(2, 8, 5, 7)))
    return cases


PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS, extra=_extra_cases())


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)


def test_conv_op_errors_and_dtypes():
    from edge_runtime.errors import InvalidArgumentError, UnsupportedDTypeError
    from edge_runtime.ops.conv import Conv, ConvTranspose

    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    y = Conv(x, w, pads=[1, 1, 1, 1])  # float64 is computed in float32 and cast back
    assert y.dtype == np.float64 and y.shape == (1, 3, 5, 5) and y[0, 0, 2, 2] == 18.0
    with pytest.raises(UnsupportedDTypeError, match="dtype int64"):
        Conv(x.astype(np.int64), w)
    with pytest.raises(InvalidArgumentError, match="kernel_shape=\\[2, 2\\]"):
        Conv(x, w, kernel_shape=[2, 2])
    with pytest.raises(InvalidArgumentError, match="strides=\\[0, 1\\]"):
        Conv(x, w, strides=[0, 1])
    yt = ConvTranspose(np.ones((1, 2, 3, 3), np.float32), np.ones((2, 1, 2, 2), np.float32),
                       strides=[2, 2], output_shape=[7, 7])
    assert yt.shape == (1, 1, 7, 7) and yt[0, 0, 6, 6] == 0.0 and yt[0, 0, 0, 0] == 2.0
