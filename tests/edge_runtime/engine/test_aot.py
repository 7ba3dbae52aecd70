"""Kernels compiled ahead of time (edge_runtime.engine.aot): Gemm islands that run numba's machine code
without loading numba, built by ``edge-runtime warmup`` into the engine cache."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime.engine import aot, gather, hybrid, plancache
from edge_runtime.engine.report import EngineConfig
from tests.edge_runtime.engine import graphs

ort = pytest.importorskip("onnxruntime")

ORT = ["CPUExecutionProvider"]
REL_TOL = 1e-4
RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine cache holding the module, built once for the tests here (~5-10 s)."""
    folder = tmp_path_factory.mktemp("engine-cache")
    before = os.environ.get(plancache.ENV)
    os.environ[plancache.ENV] = str(folder)
    try:
        aot.build()
    except aot.AotUnavailable as exc:  # e.g. the arm64 root under qemu has no C compiler
        pytest.skip(str(exc))
    finally:
        if before is None:
            os.environ.pop(plancache.ENV)
        else:
            os.environ[plancache.ENV] = before
    return folder


@pytest.fixture
def compiled(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(plancache.ENV, str(cache_dir))
    module = aot.load()
    assert module is not None
    return module


def _opts(kernels: str | None = None, threads: int = 1) -> edge_runtime.SessionOptions:
    o = edge_runtime.SessionOptions()
    o.intra_op_num_threads = threads
    o.sparse_kernels = kernels
    return o


def gemm_mlp(hidden: int = 256, act: str = "Relu", shift: float = -1.5) -> onnx.ModelProto:
    """x (N, 64) -> Gemm(transB) -> act -> Gemm(alpha, beta) -> act -> Gemm -> y (N, 16): Gemm islands only."""
    attrs, extra = graphs.relu_family(act, threshold=0.3)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["z1"], transB=1),
             helper.make_node(act, ["z1", *extra], ["h1"], **attrs),
             helper.make_node("Gemm", ["h1", "W2", "b2"], ["z2"], alpha=0.8, beta=1.2),
             helper.make_node(act, ["z2", *extra], ["h2"], **attrs),
             helper.make_node("Gemm", ["h2", "W3", "b3"], ["y"])]
    inits = [numpy_helper.from_array((RNG.standard_normal((hidden, 64)) * 0.3).astype(np.float32), "W1"),
             numpy_helper.from_array(np.full(hidden, shift, np.float32), "b1"),
             numpy_helper.from_array((RNG.standard_normal((hidden, hidden)) * 0.3).astype(np.float32), "W2"),
             numpy_helper.from_array(np.full(hidden, shift, np.float32), "b2"),
             numpy_helper.from_array((RNG.standard_normal((hidden, 16)) * 0.1).astype(np.float32), "W3"),
             numpy_helper.from_array((RNG.standard_normal(16) * 0.1).astype(np.float32), "b3"),
             *graphs.clip_bounds()]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_compiled_kernels_compute_what_the_jit_kernels_do_bit_for_bit(compiled) -> None:
    from edge_runtime.kernels import sparse_matmul

    k, n = 300, 48
    w = RNG.standard_normal((1, k, n)).astype(np.float32)
    bias = RNG.standard_normal(n).astype(np.float32)
    x = (RNG.standard_normal((5, k)) * (RNG.random((5, k)) < 0.2)).astype(np.float32)
    for act, p0, p1 in ((0, 0.0, 0.0), (1, 0.0, 0.0), (2, 0.0, 0.5), (4, 0.3, 0.0)):
        for b in (bias, np.zeros(0, np.float32)):
            got, want = np.empty(n, np.float32), np.empty(n, np.float32)
            compiled.gemv(x[0], w, b, act, p0, p1, got)
            sparse_matmul._gemv_kernel(x[0], w, b, act, p0, p1, want)
            np.testing.assert_array_equal(got, want)
            got, want = np.empty((5, n), np.float32), np.empty((5, n), np.float32)
            compiled.gemm(x, w, b, act, p0, p1, got)
            sparse_matmul._gemm_kernel(x, w, b, act, p0, p1, want)
            np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(want, np.where(x @ w[0] >= 0.3, x @ w[0], 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "ThresholdedRelu", "Clip"])
@pytest.mark.parametrize("batch", [1, 4])
def test_default_sessions_run_gemm_islands_on_the_compiled_kernels_and_agree(compiled, act: str, batch: int) -> None:
    model = gemm_mlp(act=act)
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, sparsity="force")
    assert sess.engine_report.island_kernels == "compiled", sess.engine_report
    feed = {"x": RNG.standard_normal((batch, 64)).astype(np.float32)}
    graphs.agree_with_onnxruntime(model, sess, feed)
    _, stats = sess.run_with_stats(None, feed)
    assert [s.kernel for s in stats.nodes if s.op_type == "Gemm"][:2] == ["sparse", "sparse"]


def test_a_warm_session_on_compiled_islands_never_loads_numba(compiled, cache_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of compiling ahead of time: the first session measures (numba engine included) and
    keeps the cut plan; the next process builds it from the engine cache without numba."""
    model = gemm_mlp(hidden=1024, shift=-2.0)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path))
    feed = {"x": RNG.standard_normal((1, 64)).astype(np.float32)}
    np.save(tmp_path / "x.npy", feed["x"])
    from tests.edge_runtime.engine.test_hybrid import _Prices

    # deterministic timing: both Gemm islands win, the cut plan halves the whole model, numba's engine is slower
    monkeypatch.setattr(hybrid, "_interleaved", _Prices(island=(1e-3, 1e-4), cut=(1e-3, 0.5e-3), islands=2))
    first = edge_runtime.InferenceSession(str(path), _opts(), providers=ORT, warmup_feed=feed)
    report = first.engine_report
    assert report.engine == "onnxruntime" and report.island_kernels == "compiled", report
    assert "numba engine" in report.outcome and "cut kept" in report.outcome, report.outcome  # the rival was timed
    graphs.agree_with_onnxruntime(model, first, feed)
    code = f"""
import json, sys
import numpy as np, onnx, edge_runtime

inferred, infer = [], onnx.shape_inference.infer_shapes
def counted(*args, **kwargs):
    inferred.append(1)
    return infer(*args, **kwargs)
onnx.shape_inference.infer_shapes = counted  # the cut's types come from the cache entry
o = edge_runtime.SessionOptions(); o.intra_op_num_threads = 1
x = np.load({str(tmp_path / 'x.npy')!r})
s = edge_runtime.InferenceSession({str(path)!r}, o, providers=["CPUExecutionProvider"], warmup_feed={{"x": x}})
y = s.run(None, {{"x": x}})[0]
np.save({str(tmp_path / 'y.npy')!r}, y)
r = s.engine_report
loaded = [m for m in ("numba", "numpy.random", "hashlib") if m in sys.modules]
print(json.dumps({{"loaded": loaded, "inferred": len(inferred), "cached": r.cached, "kernels": r.island_kernels}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **{plancache.ENV: str(cache_dir)}))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # nor numpy's random generators (priming's synthetic input) nor OpenSSL (hashlib): 6 MB of a 75 MB process
    # no ONNX shape inference either (its operator registry: 15 ms, 7 MB)
    assert result == {"loaded": [], "inferred": 0, "cached": True, "kernels": "compiled"}, result
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), first.run(None, feed)[0], rtol=1e-6, atol=1e-7)


def test_a_warm_dense_session_loads_no_island_code(compiled, cache_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose islands all lost runs whole in onnxruntime; its next session reads that from the
    engine cache and builds nothing else: neither numba nor the compiled conv kernel's module (1 ms of a
    6 ms onnxruntime session on a small U-Net)."""
    model = graphs.cnn_residual()
    path = tmp_path / "cnn.onnx"
    onnx.save(model, str(path))
    from tests.edge_runtime.engine.test_hybrid import _Prices

    monkeypatch.setattr(hybrid, "_interleaved", _Prices(island=(1e-4, 1e-3), cut=(1e-3, 2e-3), islands=99))
    first = edge_runtime.InferenceSession(str(path), _opts(), providers=ORT)
    assert first.engine_report.candidates > 0 and not any(d.kept for d in first.engine_report.islands)
    code = f"""
import json, sys
import edge_runtime
o = edge_runtime.SessionOptions(); o.intra_op_num_threads = 1
s = edge_runtime.InferenceSession({str(path)!r}, o, providers=["CPUExecutionProvider"])
loaded = [m for m in ("numba", "edge_runtime.engine.compiled_conv", "edge_runtime.sparse_layouts") if m in sys.modules]
print(json.dumps({{"loaded": loaded, "cached": s.engine_report.cached, "steps": len(s._plan.steps)}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **{plancache.ENV: str(cache_dir)}))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"loaded": [], "cached": True, "steps": 1}


def test_numpy_islands_use_the_compiled_kernels_where_they_exist(compiled) -> None:
    model = graphs.mlp(hidden=256, bias_shift=-2.0)  # MatMul islands: numpy mode takes them, numba mode keeps JIT
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts("numpy"), providers=ORT, sparsity="force")
    assert sess.engine_report.island_kernels == "compiled"
    for batch in (1, 3):
        graphs.agree_with_onnxruntime(model, sess, {"x": RNG.standard_normal((batch, 64)).astype(np.float32)})
    jit = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, sparsity="force")
    assert jit.engine_report.island_kernels == "numba"


def test_which_islands_the_compiled_kernels_stand_in_for(compiled) -> None:
    from edge_runtime.engine import islands as isl

    gemms, cnn = gemm_mlp(), graphs.cnn_residual()

    def kernels(model: onnx.ModelProto, asked: str, threads: int = 1) -> str:
        cands = isl.candidates(model, {}, "force")
        return hybrid._island_kernels(EngineConfig(threads=threads, sparse_kernels=asked), model, cands).sparse_kernels

    assert kernels(gemms, "numba") == "compiled"
    assert kernels(gemms, "numba", threads=2) == "compiled"  # the numba engine is still timed against it
    assert kernels(cnn, "numba") == "compiled"  # its Convs and Gemm
    assert kernels(cnn, "numba", threads=2) == "numba"  # numba's conv kernels split a conv over threads
    assert kernels(graphs.mlp(), "numba") == "numba"  # MatMul islands: the JIT's tiled layout
    assert kernels(graphs.mlp(), "numpy", threads=2) == "compiled"
    assert kernels(graphs.dense_silu_cnn(), "numpy") == "compiled"
    grouped = graphs.cnn_residual()
    conv = next(n for n in grouped.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("auto_pad", "SAME_UPPER"))
    assert kernels(grouped, "numba") == "numba"  # a Conv the compiled kernel does not take
    compiled_found = isl.supported(cnn, isl.candidates(cnn, {}, "force"), "compiled")
    assert {cnn.graph.node[c.nodes[0]].op_type for c in compiled_found} == {"Conv", "Gemm"}
    assert {cnn.graph.node[c.nodes[0]].op_type for c in isl.supported(cnn, isl.candidates(cnn, {}, "force"),
                                                                      "numpy")} == {"Gemm"}


def test_without_a_compiled_module_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plancache.ENV, str(tmp_path))
    assert aot.load() is None
    sess = edge_runtime.InferenceSession(gemm_mlp().SerializeToString(), _opts(), providers=ORT, sparsity="force")
    assert sess.engine_report.island_kernels == "numba"


def test_a_module_others_can_write_or_a_broken_one_is_not_loaded(compiled, cache_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(plancache.ENV, str(tmp_path))
    target = aot.module_path()
    target.parent.mkdir(mode=0o700)
    target.write_bytes((cache_dir / "aot" / target.name).read_bytes())
    target.chmod(0o775)  # group-writable
    with caplog.at_level(logging.WARNING, logger="edge_runtime.engine.aot"):
        assert aot.load() is None
    assert "chmod go-w" in caplog.text
    aot._LOADED.clear()
    target.chmod(0o755)
    target.write_bytes(b"not an extension module")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_runtime.engine.aot"):
        assert aot.load() is None
    assert "not loaded" in caplog.text and "numba kernels run instead" in caplog.text
    sess = edge_runtime.InferenceSession(gemm_mlp().SerializeToString(), _opts(), providers=ORT, sparsity="force")
    assert sess.engine_report.island_kernels == "numba"  # the line keeps running, on the JIT kernels


def test_no_compiler_is_one_line_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba.pycc")
    monkeypatch.setenv(plancache.ENV, str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(aot.AotUnavailable) as info:
        aot.build()
    message = str(info.value)
    assert "\n" not in message and "a C compiler (" in message and "no-such-cc" in message, message
    assert aot.INSTALL_HINT in message and "JIT kernels run" in message
    assert not aot.directory().exists()  # checked before anything is written


def test_a_failed_build_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba.pycc")
    monkeypatch.setenv(plancache.ENV, str(tmp_path))
    monkeypatch.setattr(aot, "missing_build_tools", lambda: [])

    def broken(cc_class, kernels, folder):
        (Path(folder) / "half.o").write_bytes(b"x")
        raise RuntimeError("error: command 'gcc' failed. With more.\nsecond line")
    monkeypatch.setattr(aot, "_compile", broken)
    with pytest.raises(aot.AotUnavailable) as info:
        aot.build()
    message = str(info.value)
    assert "\n" not in message and "numba.pycc failed (error: command 'gcc' failed)" in message, message
    assert aot.INSTALL_HINT in message and "JIT kernels run" in message
    assert not aot.module_path().exists() and list(aot.directory().iterdir()) == []  # nothing half-written


def test_a_missing_cxx_compiler_or_python_headers_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numba.pycc also checks that C++ compiles: on an arm64 Debian root with gcc but no g++ it failed with
    'Attempted to compile AOT function without the compiler used by numpy.distutils present'."""
    import sysconfig

    monkeypatch.setenv(plancache.ENV, str(tmp_path))
    monkeypatch.setenv("CC", sys.executable)  # a program that exists, whether or not this machine has gcc
    monkeypatch.setenv("CXX", "no-such-c++")
    paths = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {**paths, "include": str(tmp_path / "include")})
    assert aot.missing_build_tools() == ["a C++ compiler (no-such-c++)",
                                         f"Python's headers ({tmp_path / 'include' / 'Python.h'})"]
    with pytest.raises(aot.AotUnavailable, match=r"needs a C\+\+ compiler \(no-such-c\+\+\) and Python's headers"):
        aot.build()
    monkeypatch.setenv("CXX", f"{sys.executable} --some-flag")  # the program is the first word, as distutils runs it
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "Python.h").write_text("")
    assert aot.missing_build_tools() == []


def test_the_engine_cache_off_means_nothing_is_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plancache.ENV, "off")
    assert aot.load() is None
    with pytest.raises(aot.AotUnavailable, match="engine cache is off"):
        aot.build()


def test_warmup_compiles_once_and_says_so(compiled, cache_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from edge_runtime import cli

    path = tmp_path / "mlp.onnx"
    onnx.save(gemm_mlp(), str(path))
    assert cli.main(["warmup", str(path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert f"kernels compiled ahead of time: {aot.module_path()}" in out and "built in" not in out  # already there


def test_two_threads_running_one_session_on_compiled_islands_get_their_own_outputs(compiled) -> None:
    import threading

    model = gemm_mlp()
    sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(threads=2), providers=ORT, sparsity="force")
    assert sess.engine_report.island_kernels == "compiled"
    ref = ort.InferenceSession(model.SerializeToString(), providers=ORT)
    feeds = [{"x": RNG.standard_normal((b, 64)).astype(np.float32)} for b in (1, 3)]
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def work(i: int) -> None:
        for _ in range(20):
            results[i].append(sess.run(None, feeds[i])[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, feed in enumerate(feeds):
        want = ref.run(None, feed)[0]
        for got in results[i]:
            np.testing.assert_allclose(got, want, rtol=REL_TOL, atol=REL_TOL)


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_widths_off_the_vector_step_run_padded_and_aligned(compiled, trans_b: bool, alpha: float) -> None:
    w = RNG.standard_normal((40, 10)).astype(np.float32)  # N = 10: padded to 16 zero columns
    b = RNG.standard_normal(10).astype(np.float32)
    k = gather.GatherKernel(w.T.copy() if trans_b else w, b, lambda y: np.maximum(y, 0.0, out=y), trans_b, alpha,
                            compiled=compiled)
    x = (RNG.standard_normal((3, 40)) * (RNG.random((3, 40)) < 0.3)).astype(np.float32)
    want = np.maximum(alpha * (x @ w) + b, 0)
    for rows in (x[:1], x):
        np.testing.assert_allclose(k(rows, 0.3), want[:len(rows)], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(k.dense(rows), want[:len(rows)], rtol=1e-5, atol=1e-5)
    assert k.w.shape == (40, 10) and k._w.shape == (40, 16) and k._w.ctypes.data % 64 == 0
    if alpha == 1.0:
        np.testing.assert_array_equal(k.source_weight(), w.T if trans_b else w)  # put back bit for bit


def conv_chain(act: str, stride: int = 1, dilation: int = 1, pads: tuple[int, ...] = (1, 1, 1, 1)) -> onnx.ModelProto:
    """x (N, 3, 15, 13) -> Relu -> Conv(3x3, 16 -> 24, bias, stride, dilation, pads) -> act ->
    Conv(1x1, 24 -> 40, no bias) -> Relu -> GlobalAveragePool -> y."""
    attrs, extra = graphs.relu_family(act)
    nodes = [helper.make_node("Conv", ["x", "W0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "W1", "b1"], ["c1"], strides=[stride, stride],
                              dilations=[dilation, dilation], pads=list(pads)),
             helper.make_node(act, ["c1", *extra], ["h"], **attrs),
             helper.make_node("Conv", ["h", "W2"], ["c2"]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["y"])]
    inits = [numpy_helper.from_array((RNG.standard_normal((16, 3, 3, 3)) * 0.4).astype(np.float32), "W0"),
             numpy_helper.from_array(np.full(16, -0.6, np.float32), "b0"),
             numpy_helper.from_array((RNG.standard_normal((24, 16, 3, 3)) * 0.2).astype(np.float32), "W1"),
             numpy_helper.from_array((RNG.standard_normal(24) * 0.1).astype(np.float32), "b1"),
             numpy_helper.from_array((RNG.standard_normal((40, 24, 1, 1)) * 0.2).astype(np.float32), "W2"),
             *graphs.clip_bounds()]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 15, 13])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 40, 1, 1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "ThresholdedRelu", "Clip"])
@pytest.mark.parametrize("batch", [1, 4])
def test_conv_islands_on_the_compiled_kernel_agree_with_onnxruntime(compiled, act: str, batch: int) -> None:
    for stride, dilation, pads in ((1, 1, (1, 1, 1, 1)), (2, 1, (0, 1, 1, 0)), (1, 2, (2, 2, 2, 2))):
        model = conv_chain(act, stride, dilation, pads)
        sess = edge_runtime.InferenceSession(model.SerializeToString(), _opts(), providers=ORT, sparsity="force")
        assert sess.engine_report.island_kernels == "compiled", sess.engine_report
        feed = {"x": RNG.standard_normal((batch, 3, 15, 13)).astype(np.float32)}
        graphs.agree_with_onnxruntime(model, sess, feed)
        _, stats = sess.run_with_stats(None, feed)
        assert [s.kernel for s in stats.nodes if s.op_type == "Conv"] == ["sparse"] * 3, stats.nodes


def test_numpy_mode_runs_conv_islands_without_numba(compiled, cache_dir: Path, tmp_path: Path) -> None:
    """sparse_kernels="numpy" never loads numba; with the compiled kernels its CNNs get Conv islands."""
    path = tmp_path / "cnn.onnx"
    model = conv_chain("Relu")
    onnx.save(model, str(path))
    x = RNG.standard_normal((1, 3, 15, 13)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = f"""
import json, sys
import numpy as np, edge_runtime
o = edge_runtime.SessionOptions(); o.intra_op_num_threads = 2; o.sparse_kernels = "numpy"
x = np.load({str(tmp_path / 'x.npy')!r})
s = edge_runtime.InferenceSession({str(path)!r}, o, providers=["CPUExecutionProvider"], sparsity="force")
np.save({str(tmp_path / 'y.npy')!r}, s.run(None, {{"x": x}})[0])
print(json.dumps({{"numba": "numba" in sys.modules, "kernels": s.engine_report.island_kernels,
                  "outcome": s.engine_report.outcome}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **{plancache.ENV: str(cache_dir)}))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["numba"] is False and result["kernels"] == "compiled", result
    assert "3 islands forced sparse" in result["outcome"], result
    want = ort.InferenceSession(model.SerializeToString(), providers=ORT).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=REL_TOL, atol=REL_TOL)


def test_compiled_density_counts_match_numbas(compiled) -> None:
    from edge_runtime.kernels import density as jit

    density, at_most = aot.counters(compiled)
    for n in (0, 5, 64, 4097, 100_000):
        x = (RNG.standard_normal(n) * (RNG.random(n) < 0.2)).astype(np.float32)
        if n > 3:
            x[3] = np.nan  # a NaN is not a zero
        assert density(x) == jit.density(x)
        for limit in (0.0, 0.1, 0.25, 1.0):
            assert at_most(x, limit) == jit.density_at_most(x, limit), (n, limit)
    strided = np.ones((8, 8), np.float32)[:, ::2]
    assert density(strided) == 1.0 and at_most(strided, 0.5) == (False, 1.0)
