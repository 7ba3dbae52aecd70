"""ONNX backend conformance for GridSample and AffineGrid (ops/grid_sample.py), and parity with onnxruntime."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

import edge_runtime
from edge_runtime.errors import InvalidInputError, InvalidModelError
from edge_runtime.ops.grid_sample import GridSample, GridSample_16
from tests.edge_runtime import conformance

OP_TYPES = ("GridSample", "AffineGrid")

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
#: AffineGrid's ``_expanded`` cases use ``If``, which is not implemented, so the harness leaves them out.
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)


def _run_both(op: str, opset: int, feed: dict[str, np.ndarray], **attrs: object) -> tuple[np.ndarray, np.ndarray]:
    """(onnxruntime, edge_runtime numba engine) outputs of a one-node model."""
    ort = pytest.importorskip("onnxruntime")
    info = helper.make_tensor_value_info
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
    graph = helper.make_graph([helper.make_node(op, list(feed), ["y"], **attrs)], "g",
                              [info(k, types[v.dtype], None) for k, v in feed.items()],
                              [info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()
    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    (got,) = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"]).run(None, feed)
    return want, got


def _grid_feed(rank: int, seed: int) -> dict[str, np.ndarray]:
    """A map and a grid reaching 60% past the border (every padding rule acts), with exact -1/0/1/0.5 values."""
    rng = np.random.default_rng(seed)
    spatial, out = ((9, 13), (11, 8)) if rank == 2 else ((5, 6, 7), (4, 5, 6))
    grid = rng.uniform(-1.6, 1.6, (2, *out, rank)).astype(np.float32)
    grid.reshape(-1)[:20] = np.tile([-1, 1, 0, 0.5, -0.5], 4)
    return {"x": rng.standard_normal((2, 3, *spatial)).astype(np.float32), "g": grid}


COMBOS = [(rank, opset, mode, pad, ac) for rank, opset, mode, pad, ac in itertools.product(
    (2, 3), (16, 20), ("linear", "nearest", "cubic"), ("zeros", "border", "reflection"), (0, 1))
    if not (rank == 3 and (opset == 16 or mode == "cubic"))]  # opset 16 is 4-D only; cubic is 4-D in onnxruntime


@pytest.mark.parametrize("rank,opset,mode,pad,ac", COMBOS)
def test_grid_sample_matches_onnxruntime(rank, opset, mode, pad, ac):
    name = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode) if opset == 16 else mode
    want, got = _run_both("GridSample", opset, _grid_feed(rank, opset + ac), mode=name, padding_mode=pad,
                          align_corners=ac)
    assert got.shape == want.shape and np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank,ac", [(2, 0), (2, 1), (3, 0), (3, 1)])
def test_affine_grid_feeds_grid_sample_like_onnxruntime(rank, ac):
    rng = np.random.default_rng(rank + ac)
    theta = (np.eye(rank, rank + 1) + rng.normal(0, 0.3, (2, rank, rank + 1))).astype(np.float32)
    size = np.array([2, 3, 6, 7] if rank == 2 else [2, 3, 4, 5, 6], np.int64)
    want, got = _run_both("AffineGrid", 20, {"theta": theta, "size": size}, align_corners=ac)
    assert got.shape == (2, *size[2:], rank)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_grid_sample_float64_matches_float32():
    feed = _grid_feed(2, 0)
    got = GridSample(feed["x"].astype(np.float64), feed["g"].astype(np.float64), mode="cubic", padding_mode="border")
    want = GridSample(feed["x"], feed["g"], mode="cubic", padding_mode="border")
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_grid_sample_errors_name_the_problem():
    feed = _grid_feed(2, 0)
    with pytest.raises(InvalidInputError, match=r"grid \(2, 11, 8, 3\)"):
        GridSample(feed["x"], np.zeros((2, 11, 8, 3), np.float32))
    with pytest.raises(InvalidModelError, match="mode 'linear'"):
        GridSample_16(feed["x"], feed["g"], mode="linear")       # opset 16 calls it bilinear
    with pytest.raises(InvalidModelError, match="rank-5 input"):
        GridSample_16(np.zeros((1, 1, 2, 2, 2), np.float32), np.zeros((1, 1, 1, 1, 3), np.float32))
    with pytest.raises(InvalidModelError, match="padding_mode 'wrap'"):
        GridSample(feed["x"], feed["g"], padding_mode="wrap")


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_torch_spatial_transformer_export_matches_torch(mode):
    """An STN/rectifier head: F.affine_grid + F.grid_sample, exported at opset 20 (AffineGrid + GridSample).

    Not ``nearest``: an affine grid over a regular lattice puts many positions on rounding ties
    (x.5 pixels), where a 1-ulp grid difference picks the other pixel; onnxruntime and torch
    disagree on 10% of them. Nearest is compared on given grids above.
    """
    import io

    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    class Rectifier(torch.nn.Module):
        def forward(self, x, theta):
            grid = F.affine_grid(theta, [2, 3, 8, 24], align_corners=False)
            return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)

    x = torch.randn(2, 3, 16, 40, generator=torch.Generator().manual_seed(0))
    theta = torch.tensor([[[0.9, 0.1, 0.05], [-0.1, 1.1, 0.0]], [[1.2, 0.0, -0.2], [0.05, 0.7, 0.1]]])
    buf = io.BytesIO()
    torch.onnx.export(Rectifier(), (x, theta), buf, dynamo=False, opset_version=20, input_names=["x", "theta"])
    sess = edge_runtime.InferenceSession(buf.getvalue(), providers=["EdgeRuntimeExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy(), "theta": theta.numpy()})
    with torch.no_grad():
        want = Rectifier()(x, theta).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
def test_grid_sample_nan_and_inf_pixels_propagate_like_onnxruntime(mode, pad):
    feed = _grid_feed(2, 1)
    flat = feed["x"].reshape(-1)
    where = np.random.default_rng(0).choice(flat.size, 60, replace=False)
    flat[where[:20]], flat[where[20:40]], flat[where[40:]] = np.nan, np.inf, -np.inf
    want, got = _run_both("GridSample", 20, feed, mode=mode, padding_mode=pad)
    assert np.isnan(want).any() and np.isfinite(want).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # NaN positions and Infs must agree
