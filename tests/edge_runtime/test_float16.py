"""float16 models (passes/float16.py): float32 compute, float16 at the boundaries, like onnxruntime.

Two kinds of fp16 model: torch's ``model.half()`` exported by the TorchScript exporter (a small
ResNet and a ViT block with hand-written attention and GELU), and a float32 export converted the
onnxconverter-common way with onnx.helper (float16 initializers, graph inputs and outputs, and the
Constant/Cast nodes in between). Outputs must be float16 and match onnxruntime within float16
rounding through the network (onnxruntime rounds every intermediate to float16; edge_runtime
keeps float32 inside, so it also stays close to the float32 model).
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn
from tests import zoo  # noqa: E402  (imports torch)

REL_TOL = 2e-2  # max |ours - ort| <= REL_TOL * max |ort|: a few float16 ulps after ~10 layers


def _randomized(model: nn.Module) -> nn.Module:
    """He-normal weights and random BatchNorm statistics, so outputs are not near-constant."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return model.eval()


MODELS = {
    "resnet": (lambda: zoo.ResNet(zoo.BasicBlock, [1, 1, 1, 1], width=4), (2, 3, 32, 32)),
    "vit_block": (lambda: zoo.ViT(16, 8, 16, 1, 2, attention="hand", act="gelu"), (2, 3, 16, 16)),
}


def _export(model: nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    return buf.getvalue()


def _to_float16(model_bytes: bytes) -> bytes:
    """float32 -> float16 the way onnxconverter-common does it: initializers, I/O, Constants, Casts."""
    m = onnx.load_from_string(model_bytes)
    for i, t in enumerate(m.graph.initializer):
        if t.data_type == TensorProto.FLOAT:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    for node in m.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
            elif node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    return m.SerializeToString()


def _check(model_bytes: bytes, x16: np.ndarray, fp32_ref: np.ndarray) -> None:
    (ours,) = edge_runtime.InferenceSession(model_bytes).run(None, {"x": x16})
    (want,) = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": x16})
    assert ours.dtype == np.float16 and ours.shape == want.shape
    scale = float(np.abs(want.astype(np.float32)).max())
    assert scale > 1e-2 and float(np.std(want.astype(np.float32), axis=0).max()) > 1e-3 * scale  # not degenerate
    err = float(np.abs(ours.astype(np.float32) - want.astype(np.float32)).max())
    assert err <= REL_TOL * scale, f"max |ours - onnxruntime| {err} at scale {scale}"
    err32 = float(np.abs(ours.astype(np.float32) - fp32_ref).max())
    assert err32 <= REL_TOL * scale, f"max |ours - float32 torch| {err32} at scale {scale}"


@pytest.mark.parametrize("family", list(MODELS))
def test_half_export_matches_onnxruntime(family: str) -> None:
    build, shape = MODELS[family]
    model = _randomized(build())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref32 = model(x).numpy()
    data = _export(model.half(), x.half())
    assert onnx.load_from_string(data).graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    _check(data, x.half().numpy(), ref32)


@pytest.mark.parametrize("family", list(MODELS))
def test_converted_float16_model_matches_onnxruntime(family: str) -> None:
    build, shape = MODELS[family]
    model = _randomized(build())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref32 = model(x).numpy()
    _check(_to_float16(_export(model, x)), x.half().numpy(), ref32)


def test_session_reports_and_validates_float16_io() -> None:
    n = helper.make_node
    nodes = [n("Constant", [], ["c"], value=numpy_helper.from_array(np.array([0.5, 2.0], np.float16))),
             n("Mul", ["x", "c"], ["m"]), n("Cast", ["m"], ["m16"], to=TensorProto.FLOAT16), n("Relu", ["m16"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 2])])
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    sess = edge_runtime.InferenceSession(data)
    assert sess.get_inputs()[0].type == "tensor(float16)" and sess.get_outputs()[0].type == "tensor(float16)"
    x = np.array([[1.0, -3.0], [65504.0, 1e-4]], np.float16)
    (y,) = sess.run(None, {"x": x})
    (want,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, want)  # one multiply: float32 then one rounding equals fp16 math here
    with pytest.raises(edge_runtime.InvalidInputError, match="float16"):
        sess.run(None, {"x": x.astype(np.float32)})
