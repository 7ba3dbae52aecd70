"""Each Gemm island holds its weights once: its dense path is BLAS over the sparse kernel's own
layout (no one-island onnxruntime session), the numba engine's FusedGemm weight is a view of it,
and a session keeps no model proto; both paths agree with onnxruntime."""
from __future__ import annotations

import gc
import types
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.dispatch import Dispatcher
from edge_runtime.engine import hybrid
from edge_runtime.engine import islands as isl
from edge_runtime.engine.ort import EDGE_PROVIDER, ORT_PROVIDER, IslandDense
from edge_runtime.engine.partition import value_types

ort = pytest.importorskip("onnxruntime")

REL_TOL = 1e-4
#: Arrays at least this large count as weights (the biases and the 10-wide head's padding are smaller).
LARGE = 64 * 1024


def _gemm_mlp(k: int = 256, hidden: int = 512, classes: int = 10) -> onnx.ModelProto:
    """x (1, K) -> Gemm -> Relu -> Gemm(transB) -> Relu -> Gemm(transB): PyTorch Linear layers."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["z1"], transB=1), helper.make_node("Relu", ["z1"], ["h1"]),
             helper.make_node("Gemm", ["h1", "W2", "b2"], ["z2"], transB=1), helper.make_node("Relu", ["z2"], ["h2"]),
             helper.make_node("Gemm", ["h2", "W3", "b3"], ["y"], transB=1)]
    inits = [w("W1", hidden, k), w("b1", hidden), w("W2", hidden, hidden), w("b2", hidden),
             w("W3", classes, hidden), w("b3", classes)]
    g = helper.make_graph(nodes, "gemm_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the weights at least :data:`LARGE` (the hidden layers')."""
    sizes = (numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    return sum(n for n in sizes if n >= LARGE)


def _reachable(root: Any) -> tuple[list[np.ndarray], list[Any]]:
    """The distinct large array buffers and the protos / onnxruntime sessions / large bytes reachable from ``root``
    (modules, classes and functions' globals are not followed: they are shared, not the session's)."""
    seen, stack = set(), [root]
    buffers: dict[int, np.ndarray] = {}
    held: list[Any] = []
    while stack:
        o = stack.pop()
        if isinstance(o, bytes) and len(o) >= LARGE:  # a serialized model
            held.append(o)
        if id(o) in seen or isinstance(o, (type, types.ModuleType, str, bytes, int, float)):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            base = o
            while isinstance(base.base, np.ndarray):
                base = base.base
            if base.nbytes >= LARGE:
                buffers[id(base)] = base
            continue
        if isinstance(o, onnx.ModelProto) or isinstance(o, ort.InferenceSession):
            held.append(o)
        if isinstance(o, types.FunctionType):
            stack.extend(c.cell_contents for c in o.__closure__ or ())
            continue
        stack.extend(gc.get_referents(o))
    return list(buffers.values()), held


def _session(model: onnx.ModelProto, provider: str) -> edge_runtime.InferenceSession:
    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = 1
    return edge_runtime.InferenceSession(model.SerializeToString(), opts, providers=[provider], sparsity="force")


def _feed(k: int = 256, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((1, k)).astype(np.float32)}


def _close(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=0, atol=REL_TOL * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("provider", [ORT_PROVIDER, EDGE_PROVIDER])
def test_session_holds_each_gemm_weight_once_and_no_proto(provider: str) -> None:
    model = _gemm_mlp()
    sess = _session(model, provider)
    _close(sess.run(None, _feed())[0], ort.InferenceSession(model.SerializeToString()).run(None, _feed())[0])
    buffers, held = _reachable(sess)
    assert held == []  # no model proto or bytes, and (all layers are islands) no onnxruntime session
    weights = _weight_bytes(model)
    # each hidden layer once, in its kernel's layout (64-byte alignment slack only)
    assert weights <= sum(b.nbytes for b in buffers) <= 1.01 * weights, [b.shape for b in buffers]


def test_an_onnxruntime_session_keeps_no_copy_of_the_bytes_it_was_built_from() -> None:
    """onnxruntime's Python wrapper keeps them for its lifetime (to build the session again on a
    provider fallback); ours are let go: the whole-model session holds its weights once."""
    model = _gemm_mlp()
    opts = edge_runtime.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = edge_runtime.InferenceSession(model.SerializeToString(), opts, providers=[ORT_PROVIDER], sparsity="off")
    _, held = _reachable(sess)
    assert [type(h) for h in held] == [ort.InferenceSession]
    _close(sess.run(None, _feed())[0], ort.InferenceSession(model.SerializeToString()).run(None, _feed())[0])


def test_gemm_island_dense_path_is_its_kernels_blas_path() -> None:
    sess = _session(_gemm_mlp(), ORT_PROVIDER)
    steps = [s.fn for s in sess.plan.steps if isinstance(s.fn, Dispatcher)]
    assert len(steps) == 3
    for fn in steps:
        assert not isinstance(fn.dense, IslandDense)
        assert fn.dense == fn.sparse.dense


def test_numba_engine_gemm_weight_is_a_view_of_the_kernel_layout() -> None:
    sess = _session(_gemm_mlp(), EDGE_PROVIDER)
    steps = [s for s in sess.plan.steps if isinstance(s.fn, Dispatcher)]
    assert len(steps) == 3
    for s in steps:
        w = sess.plan.graph.initializers[s.node.inputs[1]]
        assert np.shares_memory(w, s.fn.sparse.prepared.wt)
        want = numpy_helper.to_array(next(t for t in _gemm_mlp().graph.initializer if t.name == s.node.inputs[1]))
        np.testing.assert_array_equal(w, want)


@pytest.mark.parametrize("dens", [0.1, 0.9])
@pytest.mark.parametrize("layer", [0, 2])
def test_dense_path_matches_sparse_path_and_onnxruntime(layer: int, dens: float) -> None:
    model = _gemm_mlp()
    types_ = value_types(model)
    cand = next(c for c in isl.candidates(model, {}, "force") if c.nodes[0] == layer)
    island = isl.prepare(model, cand, types_, threads=1)
    assert island is not None and island.model is None  # no one-island model kept for onnxruntime
    k = island.kernel.k
    x = hybrid.at_density(np.abs(np.random.default_rng(3).standard_normal((1, k))).astype(np.float32), dens)
    want = ort.InferenceSession(_one_layer(model, island).SerializeToString()).run(None, {cand.input: x})[0]
    dense, sparse = island.kernel.dense(x), island.kernel(x, hybrid.density(x))
    _close(dense, want)
    _close(sparse, want)
    _close(dense, sparse)


def _one_layer(model: onnx.ModelProto, island: isl.PreparedIsland) -> onnx.ModelProto:
    from edge_runtime.engine.partition import submodel

    c = island.candidate
    return submodel(model, c.nodes, [c.input], [c.output], value_types(model), c.name)
