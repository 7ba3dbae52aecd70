"""Tiny models for profiling tests (milliseconds to run on every backend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture(autouse=True)
def _no_user_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own EDGE_RUNTIME_PROFILES."""
    monkeypatch.delenv("EDGE_RUNTIME_PROFILES", raising=False)


def tiny_model() -> onnx.ModelProto:
    """y = relu(x) * W + x with x (N, 8): ops every backend runs today."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32), "W")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "W"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def tiny_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    return path


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """A real (unsigned) bundle of the tiny model: profile checks it as run does."""
    from tests.edge_runtime.bundle_factory import write_bundle

    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    y = np.maximum(x, 0) * np.linspace(-1, 1, 8, dtype=np.float32) + x
    return write_bundle(tmp_path / "bundle", tiny_model(), x, y, name="Tiny", shapes=(["N", 8], ["N", 8]),
                        names=("x", "y"))
