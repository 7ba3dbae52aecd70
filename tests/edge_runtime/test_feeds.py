"""The feed checks (edge_runtime/feeds.py): the fast exact-feed path and the full check agree.

The fast path only says "exactly right" or "ask the full check", so every feed it passes must
be one the full check accepts unchanged, and every wrong feed must still raise the full check's
one-line error through ``InferenceSession.run`` on both engines.
"""
from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest
from onnx import TensorProto, helper

from edge_runtime import InferenceSession, InvalidInputError
from edge_runtime.feeds import ExactFeed, validate_feed
from edge_runtime.graph import ValueInfo

F32 = np.dtype(np.float32)
INPUTS = (ValueInfo("x", F32, ("N", 3, 4)), ValueInfo("k", np.dtype(np.int64), (2,)))


def _good() -> dict[str, np.ndarray]:
    return {"x": np.zeros((2, 3, 4), np.float32), "k": np.array([1, 2], np.int64)}


def test_exact_feed_passes_the_same_dict():
    feed = _good()
    assert ExactFeed(INPUTS).check(feed) is feed
    assert validate_feed(INPUTS, feed) == feed  # the full check accepts it unchanged


@pytest.mark.parametrize("change", [
    {"x": np.zeros((2, 3, 4), np.float64)},           # dtype
    {"x": np.zeros((2, 3, 5), np.float32)},           # a fixed dimension
    {"x": np.zeros((3, 4), np.float32)},              # rank
    {"k": np.array([1, 2], np.int32)},                # dtype of the second input
    {"k": [1, 2]},                                    # not an array
    {"k": np.int64(1)},                               # a numpy scalar (the full check converts it)
    {"x": np.ma.zeros((2, 3, 4), np.float32)},        # an ndarray subclass (the full check decides)
    {"extra": np.zeros(1, np.float32)},               # an unexpected name
], ids=["dtype", "dim", "rank", "dtype2", "list", "scalar", "subclass", "extra"])
def test_anything_not_exact_goes_to_the_full_check(change):
    feed = _good() | change
    assert ExactFeed(INPUTS).check(feed) is None


def test_missing_name_non_dict_and_unknown_rank_go_to_the_full_check():
    check = ExactFeed(INPUTS).check
    assert check({"x": _good()["x"]}) is None
    assert check(list(_good().items())) is None
    assert ExactFeed([ValueInfo("x", F32, None)]).check({"x": np.zeros(3, np.float32)}) is None


def test_free_dimensions_match_any_size():
    check = ExactFeed([ValueInfo("x", F32, ("N", "C"))]).check
    for shape in ((1, 1), (5, 7)):
        assert check({"x": np.zeros(shape, np.float32)}) is not None


def _model() -> bytes:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 8], np.ones(32, np.float32))
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


ENGINES = [["CPUExecutionProvider"], ["EdgeRuntimeExecutionProvider"]]


@pytest.mark.parametrize("providers", ENGINES, ids=["onnxruntime", "numba"])
@pytest.mark.parametrize("feed", [
    {"x": np.ones((1, 4))}, {"x": np.ones(4, np.float32)}, {"x": np.ones((1, 5), np.float32)},
    {"x": [[1.0, 2.0, 3.0, 4.0]]}, {"X": np.ones((1, 4), np.float32)},
    {"x": np.ones((1, 4), np.float32), "extra": np.ones(1, np.float32)},
], ids=["dtype", "rank", "dim", "list", "missing", "extra"])
def test_run_rejects_wrong_feeds_with_the_full_checks_error(providers, feed):
    pytest.importorskip("onnxruntime")
    sess = InferenceSession(_model(), providers=providers)
    with pytest.raises(InvalidInputError) as expected:
        validate_feed(tuple(sess._inputs), feed)
    with pytest.raises(InvalidInputError) as got:
        sess.run(None, feed)
    assert str(got.value) == str(expected.value)
    assert "\n" not in str(got.value)


@pytest.mark.parametrize("providers", ENGINES, ids=["onnxruntime", "numba"])
def test_exact_and_converted_feeds_give_the_same_outputs(providers):
    pytest.importorskip("onnxruntime")
    sess = InferenceSession(_model(), providers=providers)
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
    want = np.maximum(x @ np.ones((4, 8), np.float32), 0)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want)
    np.testing.assert_allclose(sess.run(["y"], MappingProxyType({"x": x}))[0], want)  # the full check's path


def test_whole_model_session_is_called_directly_with_the_callers_feed():
    pytest.importorskip("onnxruntime")
    sess = InferenceSession(_model(), providers=["CPUExecutionProvider"], sparsity="off")
    assert sess.get_providers() == ["CPUExecutionProvider"]
    seen = []

    class Spy:
        def run(self, names, feed):
            seen.append((names, feed))
            return ["out"]

    sess._whole = Spy()
    feed = {"x": np.ones((1, 4), np.float32)}
    assert sess.run(None, feed) == ["out"]
    assert seen == [(["y"], feed)] and seen[0][1] is feed


@pytest.mark.parametrize("providers", ENGINES, ids=["onnxruntime", "numba"])
def test_get_inputs_outputs_are_stable_and_not_shared(providers):
    pytest.importorskip("onnxruntime")
    sess = InferenceSession(_model(), providers=providers)
    first = sess.get_inputs()
    first.append("junk")
    assert [a.name for a in sess.get_inputs()] == ["x"] and sess.get_inputs()[0].shape == ["N", 4]
    assert [(a.name, a.type) for a in sess.get_outputs()] == [("y", "tensor(float)")]
    outs = sess.get_outputs()
    outs.clear()
    assert len(sess.get_outputs()) == 1


def test_synthetic_inputs_are_normal_deterministic_and_need_no_numpy_random() -> None:
    import subprocess
    import sys

    from edge_runtime.feeds import standard_normal

    z = standard_normal((2, 3, 50, 50), seed=3)
    assert z.shape == (2, 3, 50, 50) and np.array_equal(z, standard_normal((2, 3, 50, 50), seed=3))
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03 and abs((z < 0).mean() - 0.5) < 0.02
    assert not np.array_equal(z, standard_normal(z.shape, seed=4)) and np.isfinite(z).all()
    assert standard_normal((0, 3)).shape == (0, 3) and standard_normal(()).shape == ()
    code = ("import sys; from edge_runtime.feeds import standard_normal; standard_normal((7,)); "
            "print('numpy.random' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
