"""Each sparsity module, inside a tiny model, exports with torch.onnx.export(dynamo=True)
to standard ONNX ops and onnxruntime reproduces PyTorch's output."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from exporters.sparsity import FATReLU, JSquaredReLU, MixedActivation, RestrictedLayerNorm, ZerothBias, sparsify
from tests.exporters.sparsity.tiny_models import TinyMobileNetV2, TinyViT

ort = pytest.importorskip("onnxruntime")

# Every op type the exported graphs below may contain (default ONNX domain only).
STANDARD_OPS = {
    "Add", "Mul", "Relu", "Where", "GreaterOrEqual", "Greater", "Cast", "Clip", "Min", "Max", "Gemm",
    "MatMul", "LayerNormalization", "Constant", "Reshape", "Conv", "BatchNormalization", "Concat",
    "Expand", "Transpose", "Softmax", "ReduceMean", "Gather", "Slice", "Squeeze", "Unsqueeze", "Flatten",
    "Div", "Sub", "Sqrt", "Shape", "Identity", "Split",
}


def _export_and_run(model: nn.Module, x: torch.Tensor) -> tuple[set[str], np.ndarray, np.ndarray]:
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    proto = program.model_proto
    onnx.checker.check_model(proto)
    nodes = list(proto.graph.node)
    for fn in proto.functions:
        nodes += list(fn.node)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node), {n.domain for n in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return {n.op_type for n in proto.graph.node}, got, expected


def _assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


class AllModules(nn.Module):
    """Every module in one model, so one export covers them all (exports take seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = RestrictedLayerNorm(8, mode="scratch")
        self.zeroth = ZerothBias(tokens=5, d_model=8)
        self.fc1, self.js = nn.Linear(8, 16), JSquaredReLU()
        self.fc2, self.mixed = nn.Linear(16, 16), MixedActivation(nn.ReLU(), ramp_steps=2)
        self.fc3, self.fat_layer = nn.Linear(16, 16), FATReLU(0.2, learnable=True)
        self.fc4, self.fat_channel = nn.Linear(16, 16), FATReLU(num_channels=16, cap=6.0)
        self.out = nn.Linear(16, 4)
        self.mixed.step()  # k = 0.5: the blend is exported, not a single branch
        with torch.no_grad():
            self.zeroth.table.uniform_(-0.1, 0.1)
            self.fat_channel.threshold.uniform_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.js(self.fc1(self.zeroth(self.norm(x))))  # (B, T, 16)
        h = self.fat_layer(self.fc3(self.mixed(self.fc2(h))))
        return self.out(self.fat_channel(self.fc4(h) * 4.0))  # * 4 so the ReLU6 cap binds


def test_every_module_exports_to_standard_ops_with_parity():
    model = AllModules()
    x = torch.randn(2, 5, 8)  # (B, T, C)
    ops, got, expected = _export_and_run(model, x)
    assert {"LayerNormalization", "Add", "Relu", "Mul", "GreaterOrEqual", "Where"} <= ops, ops
    assert ops <= STANDARD_OPS, ops - STANDARD_OPS
    _assert_close(got, expected)


def test_sparsified_vit_exports_with_parity():
    model = TinyViT(act=nn.ReLU, torch_mha=False)
    s = sparsify(model, "peng-scratch", tokens=model.tokens, l1_alpha=1e-3)  # hooks attached
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.fc1[0].table.uniform_(-0.1, 0.1)
    ops, got, expected = _export_and_run(s.model, torch.randn(2, 3, 8, 8))
    assert "LayerNormalization" in ops
    assert ops <= STANDARD_OPS, ops - STANDARD_OPS
    _assert_close(got, expected)


def test_sparsified_mobilenet_fatrelu_exports_with_parity():
    model = TinyMobileNetV2()
    sparsify(model, "fatrelu", fatrelu_threshold=0.1, fatrelu_per_channel=True)
    ops, got, expected = _export_and_run(model, torch.randn(2, 3, 8, 8))
    assert {"Where", "GreaterOrEqual"} <= ops
    assert ops <= STANDARD_OPS, ops - STANDARD_OPS
    _assert_close(got, expected)


def test_fatrelu_exported_zero_set_matches_pytorch():
    fat = FATReLU(0.3)
    x = torch.randn(64, 8)
    program = torch.onnx.export(fat.eval(), (x,), dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.array_equal(got == 0, (x < 0.3).numpy())
    assert [n.op_type for n in program.model_proto.graph.node] == ["GreaterOrEqual", "Where"]
