"""Control flow exported from PyTorch: torch.cond and while_loop (dynamo exporter) and a scripted
loop (TorchScript exporter) run on the numba engine, compared with onnxruntime and torch."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import edge_runtime

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo exporter needs it


def _dynamo(module: "torch.nn.Module", args: tuple) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.onnx.export(module, args, dynamo=True, verbose=False).model_proto.SerializeToString()


def _check(model: bytes, feed: dict[str, np.ndarray], expected: np.ndarray) -> None:
    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    (got,) = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).run(None, feed)
    assert got.shape == want.shape == expected.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


class _Cond(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        def then_fn(x):
            return self.linear(x).relu()  # the branch reads the outer weights

        def else_fn(x):
            return x.cos() + 1

        return torch.cond(x.sum() > 0, then_fn, else_fn, (x,))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_torch_cond_export(sign):
    torch.manual_seed(0)
    module = _Cond().eval()
    x = torch.rand(3, 4) * sign
    model = _dynamo(module, (x,))
    with torch.no_grad():
        expected = module(x).numpy()
    name = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).get_inputs()[0].name
    _check(model, {name: x.numpy()}, expected)


class _While(torch.nn.Module):
    def forward(self, x):
        def cond_fn(i, y):
            return i < 5

        def body_fn(i, y):
            return i + 1, y * 2 + 1

        _, y = torch._higher_order_ops.while_loop(cond_fn, body_fn, (torch.tensor(0), x))
        return y


def test_torch_while_loop_export():
    x = torch.randn(2, 3)
    model = _dynamo(_While(), (x,))
    name = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).get_inputs()[0].name
    expected = x.numpy()
    for _ in range(5):
        expected = expected * 2 + 1
    _check(model, {name: x.numpy()}, expected)


class _Scripted(torch.nn.Module):
    def forward(self, x, n: int):
        acc = torch.zeros_like(x)
        for i in range(n):
            acc = acc + x * float(i)
            if bool(acc.sum() > 10.0):
                acc = acc - 1.0
        return acc


@pytest.mark.parametrize("n", [0, 3, 7])
def test_scripted_loop_export(tmp_path, n):
    scripted = torch.jit.script(_Scripted())
    x = torch.rand(2, 3) + 0.5
    path = tmp_path / "loop.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(scripted, (x, torch.tensor(4)), str(path), input_names=["x", "n"], output_names=["y"],
                          opset_version=17, dynamo=False)
    model = path.read_bytes()
    expected = scripted(x, n).numpy()
    _check(model, {"x": x.numpy(), "n": np.array(n, np.int64)}, expected)
