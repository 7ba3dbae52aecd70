"""edge_runtime.warmup: compiles the dense and sparse kernels a model needs, from a file or a bundle dir."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime import InvalidArgumentError
from edge_runtime import warmup as warmup_module  # noqa: F401  (the function shadows the module name)
from edge_runtime.kernels import sparse_conv


def _cnn(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
         for n, s in (("w1", (8, 3, 3, 3)), ("w2", (16, 8, 3, 3)), ("fc", (16, 2)))]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), n("Relu", ["c1"], ["r1"]),
             n("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), n("Relu", ["c2"], ["r2"]),
             n("GlobalAveragePool", ["r2"], ["g"]), n("Flatten", ["g"], ["f"]), n("MatMul", ["f", "fc"], ["y"])]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], w)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_warmup_compiles_dense_and_sparse_kernels(tmp_path: Path) -> None:
    model = _cnn(tmp_path / "model.onnx")
    result = edge_runtime.warmup(model)
    assert result["model"] == str(model) and set(result["modes"]) == {"auto", "off", "force"}
    for times in result["modes"].values():
        assert set(times) == {"session_s", "first_run_s", "second_run_s"} and all(v > 0 for v in times.values())
    assert result["total_s"] >= sum(sum(t.values()) for t in result["modes"].values())
    assert sparse_conv._conv_kernel.signatures  # the force run compiled (or loaded) the sparse conv
    assert len(result["cache_stamp"]) == 12


def test_warmup_takes_a_directory_and_rejects_other_paths(tmp_path: Path) -> None:
    _cnn(tmp_path / "model.onnx")
    assert edge_runtime.warmup(tmp_path, threads=1)["model"] == str(tmp_path / "model.onnx")
    with pytest.raises(InvalidArgumentError, match="neither an .onnx file nor a bundle"):
        edge_runtime.warmup(tmp_path / "missing")


def test_synthetic_feed_fills_free_dims_and_refuses_unknown_rank() -> None:
    from edge_runtime.warmup import synthetic_feed

    class Arg:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, dtype, shape

    feed = synthetic_feed([Arg("x", np.float32, ["N", 3, None, 8]), Arg("k", np.int64, [2])], batch=2)
    assert feed["x"].shape == (2, 3, 1, 8) and feed["x"].dtype == np.float32 and feed["x"].std() > 0.5
    assert feed["k"].tolist() == [0, 0]
    with pytest.raises(InvalidArgumentError, match="no declared shape"):
        synthetic_feed([Arg("x", np.float32, None)])


def test_cli_subcommand_prints_and_writes_json(tmp_path: Path, capsys) -> None:
    from edge_runtime.warmup import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    out = tmp_path / "warm.json"
    args = parser.parse_args(["warmup", str(_cnn(tmp_path / "m.onnx")), "--threads", "1", "--json", str(out)])
    assert args.func(args) == 0
    assert "sparsity=force" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["modes"]) == {"auto", "off", "force"}


def test_warmup_of_a_bundle_fills_the_engine_cache_that_run_uses(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`warmup BUNDLE` measures the onnxruntime engine's decision on the bundle's golden input;
    the line's `run` session then builds that plan without measuring."""
    pytest.importorskip("onnxruntime")
    from edge_runtime.engine import hybrid
    from edge_runtime.validation.run import BundleRunner

    monkeypatch.setenv("EDGE_RUNTIME_DENSE_ENGINE", "onnxruntime")
    monkeypatch.setenv("EDGE_RUNTIME_ENGINE_CACHE", str(tmp_path / "cache"))
    folder = _mlp_bundle(tmp_path / "bundle")

    edge_runtime.warmup(folder, threads=1)
    assert list((tmp_path / "cache").glob("*.json")), "warmup kept no engine decision"
    monkeypatch.setattr(hybrid, "_decide", lambda *a, **k: pytest.fail("run measured again"))
    runner = BundleRunner(folder, threads=1)
    assert runner.session.engine_report.cached and runner.session.engine_report.candidates == 1


def _mlp_bundle(folder: Path) -> Path:
    """A bundle (2x2 grayscale input) whose model is a ReLU MLP: a sparse-island candidate."""
    from tests.edge_runtime.bundle_factory import edit, make_bundle, sha

    folder = make_bundle(folder)
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
         for n, s in (("w1", (4, 128)), ("w2", (128, 128)), ("w3", (128, 3)))]
    n = helper.make_node
    nodes = [n("Flatten", ["x"], ["f"]), n("MatMul", ["f", "w1"], ["h1"]), n("Relu", ["h1"], ["r1"]),
             n("MatMul", ["r1", "w2"], ["h2"]), n("Relu", ["h2"], ["r2"]), n("MatMul", ["r2", "w3"], ["logits"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 2])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], w)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    edit(folder, reseal=True, files={m: sha(folder / m) for m in ("golden.npz", "model.onnx")})
    return folder


def test_run_on_fewer_images_than_the_line_check_needs_settles_it_on_the_golden_inputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`run` on 3 images: the check (48 runs) finishes on the bundle's golden inputs after them, so
    the engine cache holds a checked decision and the next start builds one plan."""
    pytest.importorskip("onnxruntime")
    Image = pytest.importorskip("PIL.Image")  # `run` decodes images with Pillow (the [tools] extra)

    from edge_runtime.engine import hybrid
    from edge_runtime.validation import commands
    from tests.edge_runtime.engine.test_hybrid import _Prices

    monkeypatch.setenv("EDGE_RUNTIME_DENSE_ENGINE", "onnxruntime")
    monkeypatch.setenv("EDGE_RUNTIME_ENGINE_CACHE", str(tmp_path / "cache"))
    folder = _mlp_bundle(tmp_path / "bundle")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((2, 2), 60 * i, np.uint8)).save(images / f"{i}.png")
    monkeypatch.setattr(hybrid, "_interleaved", _Prices(island=(1e-3, 1e-4), cut=(1e-3, 0.9e-3), islands=1))
    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers())
    args = parser.parse_args(["run", str(folder), str(images), "--threads", "1"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "engine decision checked on " in err and "golden runs after the images" in err, err
    assert [json.loads(p.read_text())["line_check"] for p in (tmp_path / "cache").glob("*.json")] == ["done"]
    # the next start builds the checked plan and checks nothing
    args = parser.parse_args(["run", str(folder), str(images), "--threads", "1"])
    assert args.func(args) == 0
    assert "engine decision checked" not in capsys.readouterr().err
