"""Bounded resources: folding limit, declared sizes checked before allocation, duplicate producers,
model file size, MemoryError reported as the model's problem."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_runtime
from edge_runtime import onnx_io, resources
from edge_runtime.errors import ExecutionError, InvalidModelError
from edge_runtime.onnx_io import graph_from_model, load_model_proto
from edge_runtime.passes import constant_folding

ROOT = Path(__file__).resolve().parents[2]
I64 = TensorProto.INT64


def _model(nodes, initializers, output="y", inputs=()):
    graph = helper.make_graph(nodes, "g", list(inputs), [helper.make_tensor_value_info(output, TensorProto.FLOAT,
                                                                                       None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def constant_of_shape(shape):
    return _model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="big_fill")], [_const("s", shape)])


HUGE = {
    "ConstantOfShape": constant_of_shape([1_000_000, 1_000_000]),
    "Expand": _model([helper.make_node("Expand", ["v", "s"], ["y"], name="big_expand")],
                     [_const("v", [1.0], np.float32), _const("s", [1_000_000, 1_000_000])]),
    "Tile": _model([helper.make_node("Tile", ["v", "r"], ["y"], name="big_tile")],
                   [_const("v", [[1.0]], np.float32), _const("r", [1_000_000, 1_000_000])]),
    "Range": _model([helper.make_node("Range", ["a", "b", "d"], ["y"], name="big_range")],
                    [_const("a", 0.0, np.float32), _const("b", 1e12, np.float32), _const("d", 1.0, np.float32)]),
}


@pytest.mark.parametrize("op", sorted(HUGE))
def test_declared_sizes_beyond_memory_are_refused_at_load_naming_the_node(op):
    with pytest.raises(InvalidModelError, match=rf"node 'big_\w+' \({op}\) declares an output that needs "
                                                r"[\d,]+ MiB, more than"):
        edge_runtime.InferenceSession(HUGE[op].SerializeToString())


@pytest.mark.parametrize("op", sorted(HUGE))
def test_declared_sizes_are_checked_at_load_without_optimisations(op):
    with pytest.raises(InvalidModelError, match=rf"node 'big_\w+' \({op}\) declares an output"):
        load_model_proto(HUGE[op])
    options = edge_runtime.SessionOptions()
    options.graph_optimization_level = edge_runtime.ORT_DISABLE_ALL  # no constant folding
    with pytest.raises(InvalidModelError, match=rf"node 'big_\w+' \({op}\)"):
        edge_runtime.InferenceSession(HUGE[op].SerializeToString(), options)


def test_folding_skips_results_above_the_limit(monkeypatch):
    graph = graph_from_model(constant_of_shape([64, 64]))  # 16 KiB
    folded, changed = constant_folding.run(graph, limit_bytes=1 << 20)
    assert changed and "y" in folded.initializers and not folded.nodes
    kept, changed = constant_folding.run(graph, limit_bytes=1 << 10)
    assert not changed and "y" not in kept.initializers and [n.name for n in kept.nodes] == ["big_fill"]
    monkeypatch.setenv(resources.FOLD_LIMIT_ENV, "0.001")  # ~1 KiB
    assert not constant_folding.run(graph)[1]


def test_unfolded_large_constant_still_runs(monkeypatch):
    monkeypatch.setenv(resources.FOLD_LIMIT_ENV, "0.01")
    session = edge_runtime.InferenceSession(constant_of_shape([256, 256]).SerializeToString())
    assert session.run(None, {})[0].shape == (256, 256)


def test_memory_error_in_a_node_is_the_models_problem():
    shape_in = helper.make_tensor_value_info("s", I64, [2])
    model = _model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="fill")], [], inputs=[shape_in])
    session = edge_runtime.InferenceSession(model.SerializeToString())
    with pytest.raises(ExecutionError) as info:
        session.run(None, {"s": np.array([10**7, 10**7], np.int64)})  # 400 TB: numpy's MemoryError
    message = str(info.value)
    assert "node 'fill' (ConstantOfShape) needs more memory" in message and "runtime bug" not in message


def test_duplicate_producers_are_refused():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="first"), helper.make_node("Neg", ["x"], ["y"], name="second")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    with pytest.raises(InvalidModelError, match=r"tensor 'y' is produced by node 'first' \(Relu\) and again by "
                                                r"node 'second' \(Neg\)"):
        load_model_proto(_model(nodes, [], inputs=[x]))
    shadow = [helper.make_node("Relu", ["x"], ["w"], name="writes_w")]
    with pytest.raises(InvalidModelError, match="tensor 'w' is produced by initializer"):
        load_model_proto(_model(shadow, [_const("w", [1.0], np.float32)], output="w", inputs=[x]))


def test_model_file_size_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    onnx.save(constant_of_shape([2, 2]), path)
    monkeypatch.setattr(resources, "available_memory", lambda: 100)
    with pytest.raises(InvalidModelError, match=r"model '.*model.onnx' \(\d+ bytes, read and parsed\) needs"):
        load_model_proto(path)
    with open(tmp_path / "huge.onnx", "wb") as handle:
        handle.truncate(3 << 30)  # sparse 3 GB
    with pytest.raises(InvalidModelError, match="must be under 2 GiB"):
        load_model_proto(tmp_path / "huge.onnx")
    assert onnx_io.MAX_MODEL_BYTES < 2 << 30


def test_big_model_file_refused_under_an_address_space_limit(tmp_path):
    """A 1.5 GB model file with 256 MB of address space left: a clear error, not an OOM kill."""
    with open(tmp_path / "big.onnx", "wb") as handle:
        handle.truncate(1536 << 20)
    script = textwrap.dedent(f"""
        import resource
        from edge_runtime.errors import InvalidModelError
        from edge_runtime.onnx_io import load_model_proto
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), resource.RLIM_INFINITY))
        if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
            raise SystemExit(print("no-limit"))
        try:
            load_model_proto({str(tmp_path / "big.onnx")!r})
        except InvalidModelError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith("no-limit"):  # qemu-user keeps RLIMIT_AS for itself, not the guest
        pytest.skip("this platform does not apply RLIMIT_AS to the process (qemu-user emulation)")
    assert "refused:" in out.stdout and "more than the" in out.stdout


def test_declared_bytes():
    assert resources.declared_bytes("ConstantOfShape", [np.array([2, 3])], {}) == 24
    assert resources.declared_bytes("Expand", [np.zeros((3, 1), np.float32), np.array([2, 1, 4])], {}) == 96
    assert resources.declared_bytes("Tile", [np.zeros((2, 3), np.float32), np.array([2, 2])], {}) == 96
    assert resources.declared_bytes("Range", [np.float32(0), np.float32(10), np.float32(3)], {}) == 16
    assert resources.declared_bytes("Relu", [np.zeros(3)], {}) is None


def test_freed_memory_goes_back_to_the_system_where_glibc_can() -> None:
    import platform
    import subprocess
    import sys

    from edge_runtime.resources import release_freed_memory

    released = release_freed_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert released
        # a freed 24 MB heap buffer stays resident until the trim
        code = """
import ctypes, sys
from edge_runtime.resources import release_freed_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
assert libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD at its most: from the heap, as after glibc raised it
assert libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: free() itself gives nothing back
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
big = libc.malloc(24 << 20); ctypes.memset(big, 1, 24 << 20)
libc.free(big); before = rss(); release_freed_memory(); print(before - rss())
"""
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if os.environ.get("QEMU_CPU"):  # set by scripts/arm64/run_tests.sh
            pytest.skip("qemu-user keeps the pages of a guest heap that glibc shrinks (the trim ran; its effect "
                        "shows on real hardware only)")
        assert int(done.stdout.strip()) >= 16, done.stdout
    else:
        assert released in (True, False)
