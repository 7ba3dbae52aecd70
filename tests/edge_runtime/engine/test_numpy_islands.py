"""``SessionOptions.sparse_kernels = "numpy"``: Gemm / MatMul islands by numpy gather + BLAS, numba never loaded."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.engine import gather
from edge_runtime.errors import InvalidArgumentError
from tests.edge_runtime.engine import graphs

ort = pytest.importorskip("onnxruntime")

ORT = ["CPUExecutionProvider"]
REL_TOL = 1e-4
RNG = np.random.default_rng(7)


def _opts(kernels: str = "numpy") -> edge_runtime.SessionOptions:
    o = edge_runtime.SessionOptions()
    o.intra_op_num_threads = 1
    o.sparse_kernels = kernels
    return o


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)


def _chains(act: str) -> onnx.ModelProto:
    """x (N, 32) -> Relu -> Gemm(transB, alpha, beta, bias) -> act -> MatMul + Add -> act -> y (N, 16)."""
    attrs, extra = graphs.relu_family(act)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Gemm", ["r", "W1", "b1"], ["g"], transB=1, alpha=0.7, beta=1.3),
             helper.make_node(act, ["g", *extra], ["h"], **attrs),
             helper.make_node("MatMul", ["h", "W2"], ["m"]), helper.make_node("Add", ["m", "b2"], ["z"]),
             helper.make_node(act, ["z", *extra], ["y"], **attrs)]
    inits = [_w("W1", 64, 32), _w("b1", 64), _w("W2", 64, 16), _w("b2", 16), *graphs.clip_bounds()]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


_agree = graphs.agree_with_onnxruntime


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "ThresholdedRelu", "Clip"])
@pytest.mark.parametrize("batch", [1, 4])
def test_forced_numpy_islands_agree_with_onnxruntime(act: str, batch: int) -> None:
    model = _chains(act)
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, sparsity="force")
    islands = [d.name for d in sess.engine_report.islands] if sess.engine_report.islands else None
    assert "2 islands forced sparse" in sess.engine_report.outcome, (sess.engine_report.outcome, islands)
    feed = {"x": RNG.standard_normal((batch, 32)).astype(np.float32)}
    _agree(model, sess, feed)
    _, stats = sess.run_with_stats(None, feed)
    assert [n.kernel for n in stats.nodes if n.op_type in ("Gemm", "MatMul")] == ["sparse", "sparse"]


def test_auto_keeps_a_numpy_island_on_a_sparse_mlp_and_agrees() -> None:
    model = graphs.mlp(hidden=1024, bias_shift=-2.0)
    feed = {"x": RNG.standard_normal((1, 64)).astype(np.float32)}
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, warmup_feed=feed)
    _agree(model, sess, feed)
    _agree(model, sess, {"x": RNG.standard_normal((3, 64)).astype(np.float32)})  # dynamic batch


def test_numpy_islands_never_load_numba(tmp_path) -> None:
    """The point of the option: a fresh process creates, primes and runs the session without numba."""
    path = tmp_path / "mlp.onnx"
    onnx.save(graphs.mlp(hidden=512, bias_shift=-2.0), str(path))
    code = f"""
import json, sys
import numpy as np, edge_runtime
o = edge_runtime.SessionOptions(); o.intra_op_num_threads = 1; o.sparse_kernels = "numpy"
x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
s = edge_runtime.InferenceSession({str(path)!r}, o, providers=["CPUExecutionProvider"], sparsity="force")
s.run(None, {{"x": x}}); s.run_with_stats(None, {{"x": x}})
print(json.dumps({{"numba": "numba" in sys.modules, "outcome": s.engine_report.outcome}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["numba"] is False and "islands forced sparse" in result["outcome"]


def test_conv_candidates_stay_in_onnxruntime_with_numpy_kernels() -> None:
    model = graphs.cnn_residual()
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, sparsity="force")
    assert "1 islands forced sparse" in sess.engine_report.outcome  # the final Gemm only
    feed = {"x": RNG.standard_normal((2, 3, 16, 16)).astype(np.float32)}
    _agree(model, sess, feed)


def test_batchnorm_after_a_gemm_is_left_to_onnxruntime() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "W"], ["m"]),
             helper.make_node("Unsqueeze", ["m", "ax"], ["u"]),
             helper.make_node("BatchNormalization", ["u", "s", "b", "mu", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    ones = numpy_helper.from_array(np.ones(24, np.float32), "s")
    inits = [_w("W", 32, 24), numpy_helper.from_array(np.array([2], np.int64), "ax"), ones, _w("b", 24), _w("mu", 24),
             numpy_helper.from_array(np.full(24, 2.0, np.float32), "var")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 24, 1])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, sparsity="force")
    _agree(model, sess, {"x": RNG.standard_normal((2, 32)).astype(np.float32)})


def test_kernel_chunks_zero_rows_nonfinite_and_threads() -> None:
    w = RNG.standard_normal((300, 40)).astype(np.float32)
    b = RNG.standard_normal(40).astype(np.float32)
    k = gather.GatherKernel(w, b, lambda y: np.maximum(y, 0.0, out=y))
    k.chunk = 7  # many chunks, the last one short
    x = RNG.standard_normal((5, 300)).astype(np.float32) * (RNG.random((5, 300)) < 0.2)
    np.testing.assert_allclose(k(x, 0.2), np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(k.dense(x), np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(k(np.zeros((1, 300), np.float32), 0.0), np.maximum(b, 0)[None])
    nan = np.zeros(300, np.float32)
    nan[3] = np.nan
    assert np.isnan(k(nan, 0.01)).all()  # a NaN input is not a zero: it reaches every output
    assert k.family(np.zeros((1, 300))) == "gemv" and k.family(x) == "gemm"
    assert gather.density(np.zeros((2, 0), np.float32)) == 1.0 and gather.density_at_most(x, 0.5)[0]

    results, errors = {}, []

    def worker(i: int) -> None:
        xi = np.roll(x, i, axis=1)
        try:
            for _ in range(50):
                got = k(xi, 0.2)
            results[i] = (got, np.maximum(xi @ w + b, 0))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in results.values():
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bias_that_would_change_the_output_shape_is_not_folded() -> None:
    assert gather._bias(np.ones((2, 8), np.float32), 8, 2) is None
    assert gather._bias(np.ones((1, 8), np.float32), 8, 1) is None  # a MatMul's output rank is unknown
    np.testing.assert_array_equal(gather._bias(np.full((1, 1), 3.0, np.float32), 8, 2), np.full(8, 3.0, np.float32))


def test_bad_sparse_kernels_is_a_one_line_error() -> None:
    model = graphs.mlp().SerializeToString()
    with pytest.raises(InvalidArgumentError, match=r"sparse_kernels='cuda' is not a kernel choice.*numba.*numpy"):
        edge_runtime.InferenceSession(model, _opts("cuda"), providers=ORT)
    with pytest.raises(InvalidArgumentError, match=r"needs the onnxruntime engine.*EdgeRuntimeExecutionProvider"):
        edge_runtime.InferenceSession(model, _opts(), providers=["EdgeRuntimeExecutionProvider"])


def test_a_warm_session_sheds_the_islands_weights_from_its_proto_and_agrees(tmp_path, monkeypatch) -> None:
    """The second session of a model builds the kept plan from the engine cache; the proto it owns
    loses the weights its numpy islands hold (the peak), and the plan still agrees."""
    from edge_runtime.engine import hybrid, islands

    monkeypatch.setenv("EDGE_RUNTIME_ENGINE_CACHE", str(tmp_path / "cache"))
    # keep every island and the cut plan whatever the timings (this test is about the warm build)
    monkeypatch.setattr(hybrid, "MIN_GAIN", 1e9)
    monkeypatch.setattr(hybrid, "MIN_PLAN_GAIN", 1e9)
    monkeypatch.setattr(hybrid, "LINE_CHECK_BELOW", 0.0)  # no line check: nothing pending
    model = graphs.mlp(hidden=1024, bias_shift=-2.0)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path))
    feed = {"x": RNG.standard_normal((1, 64)).astype(np.float32)}
    first = edge_runtime.InferenceSession(str(path), _opts(), providers=ORT, warmup_feed=feed)
    kept = [d.name for d in first.engine_report.islands if d.kept]
    assert kept, first.engine_report.outcome
    shed: list[list[str]] = []
    real = islands.shed_weights

    def spy(m: onnx.ModelProto, held: dict) -> tuple[onnx.ModelProto, list[str]]:
        light, names = real(m, held)
        shed.append(names)
        assert all(not t.raw_data and not t.float_data for t in light.graph.initializer if t.name in names)
        return light, names
    monkeypatch.setattr(islands, "shed_weights", spy)
    warm = edge_runtime.InferenceSession(str(path), _opts(), providers=ORT, warmup_feed=feed)
    assert warm.engine_report.cached and shed and len(shed[0]) == len(kept)
    _agree(model, warm, feed)
    _agree(model, warm, {"x": RNG.standard_normal((2, 64)).astype(np.float32)})


def test_shed_weights_keeps_shared_weights_and_outputs_and_restores() -> None:
    from edge_runtime.engine import islands

    model = graphs.mlp(hidden=128)
    names = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    model.graph.node.append(helper.make_node("Identity", ["W2"], ["w2_copy"]))  # a second reader of W2
    light, shed = islands.shed_weights(model, ["W1", "W2"])
    inits = {t.name: t for t in light.graph.initializer}
    assert shed == ["W1"] and not inits["W1"].raw_data and list(inits["W1"].dims) == list(names["W1"].shape)
    np.testing.assert_array_equal(numpy_helper.to_array(inits["W2"]), names["W2"])
    islands.restore_weights(light, {"W1": names["W1"]})
    restored = {t.name: t for t in light.graph.initializer}["W1"]
    np.testing.assert_array_equal(numpy_helper.to_array(restored), names["W1"])


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_source_weight_is_the_stored_weight_bit_for_bit(alpha: float) -> None:
    """What a failed warm build puts back into the proto (restore_weights)."""
    w_nk = RNG.standard_normal((12, 30)).astype(np.float32)
    k = gather.GatherKernel(w_nk, None, None, trans_b=True, alpha=alpha, weight_name="W")
    k.lay_out()
    np.testing.assert_array_equal(k.source_weight(), w_nk)
    assert (k.k, k.n) == (30, 12)
    np.testing.assert_allclose(k.w, w_nk.T * np.float32(alpha), rtol=0, atol=0)
    np.testing.assert_array_equal(gather.GatherKernel(w_nk.T, None, None).source_weight(), w_nk.T)


def test_a_profile_can_choose_numpy_islands_and_options_override_it(tmp_path) -> None:
    import dataclasses

    import device_profiles

    pi = device_profiles.load_profile("raspberry-pi-4")
    assert pi.runtime.sparse_kernels == "numba"  # the shipped default
    tight = dataclasses.replace(pi, runtime=dataclasses.replace(pi.runtime, sparse_kernels="numpy", threads=1))
    model = graphs.mlp(hidden=512, bias_shift=-2.0).SerializeToString()
    sess = edge_runtime.InferenceSession(model, providers=ORT, profile=tight, sparsity="force")
    assert isinstance(next(s.fn for s in sess._plan.steps if s.node.op_type == "MatMul").sparse, gather.GatherKernel)
    opts = _opts("numba")
    sess = edge_runtime.InferenceSession(model, opts, providers=ORT, profile=tight, sparsity="force")
    assert not any(isinstance(getattr(s.fn, "sparse", None), gather.GatherKernel) for s in sess._plan.steps)
    # a profile's choice on a device without onnxruntime is not an error: the numba engine runs
    sess = edge_runtime.InferenceSession(model, providers=["EdgeRuntimeExecutionProvider"], profile=tight)
    assert sess.get_providers() == ["EdgeRuntimeExecutionProvider"]
    shipped = (Path(device_profiles.__file__).parent / "profiles" / "raspberry-pi-4.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(shipped.replace("[runtime]\nthreads = 4\n", '[runtime]\nthreads = 4\nsparse_kernels = "cuda"\n'))
    with pytest.raises(device_profiles.ProfileError, match=r"sparse_kernels.*numba.*numpy"):
        device_profiles.load_profile(str(bad))


def test_banded_transpose_matches_numpy() -> None:
    for shape in [(1, 5), (16, 3), (37, 50), (50, 37)]:
        w = RNG.standard_normal(shape).astype(np.float32)
        got = gather._transposed(w)
        assert got.flags["C_CONTIGUOUS"] and got.dtype == np.float32
        np.testing.assert_array_equal(got, w.T)


def test_a_first_session_sheds_island_weights_and_puts_back_those_of_islands_it_drops(monkeypatch) -> None:
    """Measuring, numpy islands' weights leave the proto the session owns before any cut is built;
    an island the plan drops (here the second, slower than its dense path) gets its weight back
    bit for bit before its nodes run in a segment, and the kept plan agrees with onnxruntime."""
    from edge_runtime.engine import hybrid, plans
    from tests.edge_runtime.engine.test_hybrid import _Prices

    monkeypatch.setattr(hybrid, "_interleaved", _Prices([(1e-3, 1e-4), (1e-3, 2e-3)], (1e-3, 0.5e-3), 2))
    model = graphs.mlp(hidden=256)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    seen: list[dict[str, bool]] = []  # per cut built: island weight -> whether the proto held its data
    real = plans.cut_plan

    def spy(m: onnx.ModelProto, prepared, *args, **kwargs):
        stored = {t.name: bool(t.raw_data or t.float_data) for t in m.graph.initializer}
        seen.append({n: stored[n] for n in ("W2", "W3")})
        for t in m.graph.initializer:
            if stored[t.name]:
                np.testing.assert_array_equal(numpy_helper.to_array(t), weights[t.name])
        return real(m, prepared, *args, **kwargs)

    monkeypatch.setattr(hybrid, "cut_plan", spy)
    feed = {"x": RNG.standard_normal((1, 64)).astype(np.float32)}
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, warmup_feed=feed)
    assert [d.kept for d in sess.engine_report.islands] == [True, False], sess.engine_report.outcome
    assert seen == [{"W2": False, "W3": False}, {"W2": False, "W3": True}]  # all shed; the dropped one back
    _agree(model, sess, feed)
    _agree(model, sess, {"x": RNG.standard_normal((3, 64)).astype(np.float32)})
