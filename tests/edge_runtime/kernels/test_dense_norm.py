"""Row kernels for LayerNormalization and Softmax against float64 references and onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime as er
from edge_runtime.kernels.norm import layer_norm_rows
from edge_runtime.kernels.softmax import softmax_rows

ort = pytest.importorskip("onnxruntime")


def _softmax64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", [(197, 192), (197, 768), (3, 1), (5, 17)])
def test_layer_norm_rows_matches_float64(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 20).astype(np.float32)  # a large mean: the variance must be centred
    scale, bias = rng.standard_normal((2, shape[1])).astype(np.float32)
    y, mean, inv_std = layer_norm_rows(x, scale, bias, 1e-5)
    xd = x.astype(np.float64)
    mu, var = xd.mean(1, keepdims=True), xd.var(1, keepdims=True)
    np.testing.assert_allclose(y, (xd - mu) / np.sqrt(var + 1e-5) * scale + bias, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(mean, mu[:, 0], rtol=1e-6)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(var[:, 0] + 1e-5), rtol=1e-4)
    y0, _, _ = layer_norm_rows(x, scale, None, 1e-5)
    np.testing.assert_allclose(y0, y - bias, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("shape", [(591, 197), (197, 768), (4, 1), (2, 33)])
def test_softmax_rows_matches_float64(shape: tuple[int, int]) -> None:
    x = (np.random.default_rng(1).standard_normal(shape) * 8).astype(np.float32)
    y = softmax_rows(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, _softmax64(x), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_softmax_rows_masks_and_extremes() -> None:
    x = np.zeros((4, 24), np.float32)
    x[0, 1::2] = -np.inf                          # an attention mask: exactly 0
    x[1, 0], x[2, 0], x[3, 0] = -1e30, 200.0, np.nan
    x[2, 1] = -300.0
    y = softmax_rows(x)
    assert np.all(y[0, 1::2] == 0) and np.allclose(y[0, ::2], 1 / 12)
    assert y[1, 0] == 0 and y[2, 0] == 1 and y[2, 1] == 0
    assert np.isnan(y[3]).all()  # as numpy / onnxruntime: NaN spreads over its row


def _run_both(node, shape, inits: dict) -> tuple[np.ndarray, np.ndarray]:
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = (np.random.default_rng(2).standard_normal(shape) * 4).astype(np.float32)
    ours = er.InferenceSession(model).run(None, {"x": x})[0]
    return ours, ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_normalization_op_matches_onnxruntime(axis: int) -> None:
    shape = (2, 5, 12)
    trailing = shape[axis % 3:]
    rng = np.random.default_rng(3)
    inits = {"s": rng.standard_normal(trailing).astype(np.float32), "b": rng.standard_normal(trailing).astype(np.float32)}
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=axis, epsilon=1e-6)
    ours, want = _run_both(node, shape, inits)
    np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis", [-1, 2, 1])
def test_softmax_op_matches_onnxruntime(axis: int) -> None:
    ours, want = _run_both(helper.make_node("Softmax", ["x"], ["y"], axis=axis), (1, 3, 7, 9), {})
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-7)
