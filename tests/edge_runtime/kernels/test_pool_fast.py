"""The fast pooling paths of kernels/pool.py (stride-1 whole-tensor max, 2x2 stride-2 max, the
strided row max, the numba GlobalAveragePool) through the MaxPool builder, against onnxruntime,
NaN and +-Inf included, and against the index-tracking kernel."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import edge_runtime as er
from edge_runtime.kernels import pool

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(3)

# (input shape, attributes); each hits one kernel path of the builder
MAXPOOLS = [
    ((1, 8, 10, 10), {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}),                      # SPPF, stride 1
    ((2, 3, 9, 7), {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1]}),                        # stride 1, odd pads
    ((1, 4, 12, 11), {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 2, 1, 2]}),  # stride 1, dilated
    ((1, 4, 8, 9), {"kernel_shape": [3, 3], "ceil_mode": 1, "pads": [0, 0, 1, 1]}),        # stride 1, ceil
    ((1, 4, 9, 9), {"kernel_shape": [4, 4], "auto_pad": "SAME_UPPER"}),                    # stride 1, auto pad
    ((1, 6, 16, 16), {"kernel_shape": [2, 2], "strides": [2, 2]}),                         # 2x2 s2 (U-Net)
    ((1, 6, 15, 17), {"kernel_shape": [2, 2], "strides": [2, 2]}),                         # 2x2 s2, odd sizes
    ((1, 6, 15, 15), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),         # ceil: generic path
    ((1, 8, 23, 23), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),   # ResNet stem
    ((1, 3, 13, 14), {"kernel_shape": [3, 3], "strides": [3, 2]}),                         # other strides
    ((1, 5, 30), {"kernel_shape": [3], "pads": [1, 1]}),                                   # 1-D, stride 1
]


def _one_node(op: str, shape: tuple[int, ...], attrs: dict) -> bytes:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], op,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _input(shape: tuple[int, ...], nonfinite: bool, nan: bool = True) -> np.ndarray:
    x = RNG.standard_normal(shape).astype(np.float32)
    if nonfinite:
        flat = x.reshape(-1)
        idx = RNG.choice(flat.size, 6, replace=False)
        flat[idx[:2]], flat[idx[2:4]], flat[idx[4:]] = (np.nan if nan else 0.5), np.inf, -np.inf
    return x


def _run_both(model: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ours = er.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"])
    theirs = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return ours.run(None, {"x": x})[0], theirs.run(None, {"x": x})[0]


@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "inf"])
@pytest.mark.parametrize("shape, attrs", MAXPOOLS, ids=[str(i) for i in range(len(MAXPOOLS))])
def test_maxpool_matches_onnxruntime(shape: tuple[int, ...], attrs: dict, nonfinite: bool) -> None:
    x = _input(shape, nonfinite, nan=False)
    got, want = _run_both(_one_node("MaxPool", shape, attrs), x)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # max selects, never rounds: bit-exact, +-inf included
    assert not np.shares_memory(got, x)


@pytest.mark.parametrize("shape, attrs", MAXPOOLS, ids=[str(i) for i in range(len(MAXPOOLS))])
def test_maxpool_nan_matches_index_kernel(shape: tuple[int, ...], attrs: dict) -> None:
    """With NaN inputs onnxruntime's MLAS keeps a NaN only by position (tests/edge_runtime/test_nonfinite.py);
    the reference is the index-tracking kernel, where a NaN anywhere in a window wins, as in PyTorch."""
    x = _input(shape, True)
    model = _one_node("MaxPool", shape, attrs)
    got = er.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).run(None, {"x": x})[0]
    from edge_runtime.ops.pool import MaxPool

    want, _ = MaxPool(x, **attrs)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got).any()


def test_nan_wins_in_every_fast_path() -> None:
    """A NaN anywhere in a window gives NaN, whichever side of the window it is on (as torch)."""
    x = RNG.standard_normal((1, 2, 8, 8)).astype(np.float32)
    x[0, 0, 3, 4] = np.nan
    x[0, 1, 0, 0] = np.nan
    for k, s, p in ((3, 1, 1), (2, 2, 0), (3, 2, 1)):
        run = pool.max_pool_runner(x.shape, [k, k], [s, s], [p] * 4, [1, 1])
        got = run(x)
        want, _ = pool.max_pool(x, [k, k], [s, s], [p] * 4, [1, 1], want_indices=True)  # the index kernel
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got[0, 0]).any() and np.isnan(got[0, 1, 0, 0])


@pytest.mark.parametrize("shape", [(1, 16, 7, 7), (2, 5, 3, 11), (1, 3, 40), (1, 4, 2, 3, 5)])
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan_inf"])
def test_global_average_pool_matches_onnxruntime(shape: tuple[int, ...], nonfinite: bool) -> None:
    x = _input(shape, nonfinite)
    got, want = _run_both(_one_node("GlobalAveragePool", shape, {}), x)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
