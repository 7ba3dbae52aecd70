"""NaN and Inf propagate exactly as in onnxruntime, through the dense and the sparse kernels.

One small model per kernel family (direct/im2col conv, depthwise, Winograd, GEMV, token-batched
MatMul, sparse conv, pools, activations, softmax, norms), fed an image with one NaN pixel, one
with a +inf and a -inf pixel, an all-NaN and an all-+inf image. Each output must have NaN,
+inf and -inf at exactly the positions onnxruntime has them, and the finite values must match.
``sparsity="force"`` runs the zero-skipping kernels (a NaN input is not a zero) and the test
checks that one ran; ``"off"`` runs the dense ones.

MaxPool is the exception: onnxruntime's MLAS max pool keeps a NaN only when it is the last
value of a window (``max(acc, v)`` in SIMD order; a 2x2 window with the NaN in any of the three
other positions gives a finite maximum). edge_runtime propagates NaN from anywhere in the
window, as PyTorch does, and MaxPool outputs are compared with ``torch.nn.functional.max_pool2d``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime

ort = pytest.importorskip("onnxruntime")

RNG = np.random.default_rng(3)
REL_TOL = 1e-4  # finite entries: |ours - ort| <= REL_TOL * max |finite ort|


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)


def _model(nodes: list, inits: list, x_shape: tuple[int, ...], outputs: list[str], opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "nonfinite", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv() -> onnx.ModelProto:  # 5x5 im2col conv, then a strided 3x3 conv on a ReLU output (sparse)
    n = helper.make_node
    return _model([n("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2, 2, 2]), n("Relu", ["c1"], ["r1"]),
                   n("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["y"])],
                  [_w("w1", 8, 3, 5, 5), _w("b1", 8), _w("w2", 16, 8, 3, 3), _w("b2", 16)], (1, 3, 12, 12), ["y"])


def _depthwise() -> onnx.ModelProto:
    n = helper.make_node
    return _model([n("Conv", ["x", "w", "b"], ["c"], group=8, pads=[1, 1, 1, 1]), n("Clip", ["c", "lo", "hi"], ["y"])],
                  [_w("w", 8, 1, 3, 3), _w("b", 8), numpy_helper.from_array(np.float32(0), "lo"),
                   numpy_helper.from_array(np.float32(6), "hi")], (1, 8, 10, 10), ["y"])


def _winograd() -> onnx.ModelProto:  # 64 -> 64 channels, 16x16 output: dense_conv takes Winograd
    n = helper.make_node
    return _model([n("Relu", ["x"], ["r"]), n("Conv", ["r", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
                  [_w("w", 64, 64, 3, 3), _w("b", 64)], (1, 64, 16, 16), ["y"])


def _matmul(x_shape: tuple[int, ...]) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        n = helper.make_node
        return _model([n("Relu", ["x"], ["r"]), n("MatMul", ["r", "w"], ["m"]), n("Add", ["m", "b"], ["a"]),
                       n("Relu", ["a"], ["y"])], [_w("w", 64, 48), _w("b", 48)], x_shape, ["y"])
    return build


def _gemm() -> onnx.ModelProto:
    n = helper.make_node
    return _model([n("Relu", ["x"], ["r"]), n("Gemm", ["r", "w", "b"], ["y"], transB=1)],
                  [_w("w", 48, 64), _w("b", 48)], (2, 64), ["y"])


def _torch_max_pools(x: np.ndarray) -> dict[str, np.ndarray]:
    """The pool model's max outputs as PyTorch computes them (NaN anywhere in a window wins)."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x)
    fn = torch.nn.functional
    return {"mp": fn.max_pool2d(t, 2, 2).numpy(), "mp3": fn.max_pool2d(t, 3, 1, 1).numpy(),
            "gmp": fn.adaptive_max_pool2d(t, 1).numpy()}


def _pool() -> onnx.ModelProto:
    n = helper.make_node
    return _model([n("MaxPool", ["x"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
                   n("MaxPool", ["x"], ["mp3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                   n("AveragePool", ["x"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                   n("GlobalAveragePool", ["x"], ["gap"]), n("GlobalMaxPool", ["x"], ["gmp"])],
                  [], (1, 4, 8, 8), ["mp", "mp3", "ap", "gap", "gmp"])


def _activations() -> onnx.ModelProto:
    n = helper.make_node
    ops = [n("Relu", ["x"], ["relu"]), n("Clip", ["x", "lo", "hi"], ["clip"]), n("LeakyRelu", ["x"], ["leaky"]),
           n("Sigmoid", ["x"], ["sigmoid"]), n("Tanh", ["x"], ["tanh"]), n("HardSigmoid", ["x"], ["hsig"]),
           n("HardSwish", ["x"], ["hswish"]), n("Erf", ["x"], ["erf"]), n("Elu", ["x"], ["elu"]),
           n("ThresholdedRelu", ["x"], ["trelu"], alpha=0.5)]
    return _model(ops, [numpy_helper.from_array(np.float32(-1), "lo"), numpy_helper.from_array(np.float32(1), "hi")],
                  (2, 4, 6), [o.output[0] for o in ops])


def _softmax() -> onnx.ModelProto:
    return _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [], (2, 3, 10), ["y"])


def _norm() -> onnx.ModelProto:
    n = helper.make_node
    bn = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in
          (("s", RNG.uniform(0.5, 2, 4)), ("o", RNG.standard_normal(4)), ("mu", RNG.standard_normal(4)),
           ("var", RNG.uniform(0.5, 2, 4)))]
    ln = [numpy_helper.from_array(np.ones(6, np.float32), "g"), numpy_helper.from_array(np.zeros(6, np.float32), "be")]
    return _model([n("BatchNormalization", ["x", "s", "o", "mu", "var"], ["bn"]),
                   n("LayerNormalization", ["x", "g", "be"], ["ln"], axis=-1)], bn + ln, (1, 4, 6, 6), ["bn", "ln"])


FAMILIES: dict[str, Callable[[], onnx.ModelProto]] = {
    "conv": _conv, "depthwise": _depthwise, "winograd": _winograd, "gemv": _matmul((1, 64)),
    "matmul_tokens": _matmul((2, 8, 64)), "gemm": _gemm, "pool": _pool, "activation": _activations,
    "softmax": _softmax, "norm": _norm,
}
SPARSE_FAMILIES = ("conv", "winograd", "gemv", "matmul_tokens", "gemm")


def _inputs(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    base = RNG.standard_normal(shape).astype(np.float32)
    one_nan, infs = base.copy(), base.copy()
    one_nan.flat[base.size // 3] = np.nan
    infs.flat[base.size // 4] = np.inf
    infs.flat[(2 * base.size) // 3] = -np.inf
    return {"one_nan": one_nan, "pos_neg_inf": infs, "all_nan": np.full(shape, np.nan, np.float32),
            "all_inf": np.full(shape, np.inf, np.float32)}


def _assert_same(ours: np.ndarray, ref: np.ndarray, where: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, where
    for what, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        bad = test(ours) != test(ref)
        assert not bad.any(), (f"{where}: {what} at {int(bad.sum())} positions differs from onnxruntime, "
                               f"first {np.argwhere(bad)[0].tolist()}: ours {ours[bad][0]}, ort {ref[bad][0]}")
    fin = np.isfinite(ref)
    if fin.any():
        scale = max(1.0, float(np.abs(ref[fin]).max()))
        err = float(np.abs(ours[fin].astype(np.float64) - ref[fin]).max())
        assert err <= REL_TOL * scale, f"{where}: finite values differ by {err} (scale {scale})"


@pytest.mark.parametrize("mode", ["off", "force"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_nonfinite_inputs_match_onnxruntime(family: str, mode: str) -> None:
    model = FAMILIES[family]()
    data = model.SerializeToString()
    ref_sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    sess = edge_runtime.InferenceSession(data, sparsity=mode)
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    kernels = set()
    for case, x in _inputs(shape).items():
        ours, stats = sess.run_with_stats(None, {"x": x})
        kernels |= {n.kernel for n in stats.nodes}
        refs = dict(zip([o.name for o in model.graph.output], ref_sess.run(None, {"x": x})))
        if family == "pool" and sess.dense_engine == "numba":  # onnxruntime's engine keeps its own MaxPool rule
            refs.update(_torch_max_pools(x))
        for a, (name, b) in zip(ours, refs.items()):
            _assert_same(a, b, f"{family}/{mode}/{case}/{name}")
    if mode == "force" and family in SPARSE_FAMILIES:
        assert "sparse" in kernels, f"sparsity='force' ran no sparse kernel for {family}: {kernels}"


def test_one_nan_pixel_reaches_the_logits() -> None:
    """A classifier-shaped model: one NaN pixel gives NaN logits, not a finite class, in every mode."""
    n = helper.make_node
    model = _model([n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), n("Relu", ["c"], ["r"]),
                    n("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]), n("GlobalAveragePool", ["p"], ["g"]),
                    n("Flatten", ["g"], ["f"]), n("Gemm", ["f", "fc", "fb"], ["logits"], transB=1),
                    n("Softmax", ["logits"], ["y"])],
                   [_w("w", 16, 3, 3, 3), _w("b", 16), _w("fc", 4, 16), _w("fb", 4)], (1, 3, 16, 16), ["y"])
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    x[0, 1, 7, 9] = np.nan
    for mode in ("off", "auto", "force"):
        (y,) = edge_runtime.InferenceSession(model.SerializeToString(), sparsity=mode).run(None, {"x": x})
        assert np.isnan(y).all(), f"sparsity={mode}: {y}"
