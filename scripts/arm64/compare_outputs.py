"""Run edge_runtime kernels and small models with fixed seeds; compare two machines' outputs.

Runs unchanged on the host (x86-64) and inside the arm64 root under qemu, so that
``scripts/arm64/run_tests.sh`` can prove the device side computes the same numbers on
aarch64 as on the build machine.

Usage::

    python scripts/arm64/compare_outputs.py run --out host.npz
    python scripts/arm64/compare_outputs.py compare host.npz arm64.npz [--rtol 1e-4]

``run`` evaluates every case below and writes one array per output, plus a JSON record
(machine, versions, and for each case "ok", "skipped: reason" or "error: reason").
Parts of the runtime are still being written: a case whose module or function does not
exist yet is *skipped*, not failed, and ``compare`` lists it. ``compare`` fails when an
output differs beyond tolerance, or a case ran on one machine and errored on the other.

Tolerance: ``max|a - b| <= rtol * max(max|b|, 1)``, i.e. relative to the output's scale.
Per element relative error is meaningless here: the kernels use fastmath (reassociation,
FMA on aarch64, AVX-512 on the host), so an output near zero can differ in every digit
while the layer is correct.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run from a checkout without installing it
    sys.path.insert(0, str(REPO))

Case = Callable[[], "dict[str, np.ndarray]"]
CASES: dict[str, Case] = {}
SKIP_ERRORS = (ImportError, AttributeError, NotImplementedError)


def case(fn: Case) -> Case:
    """Register a case under its function name."""
    CASES[fn.__name__] = fn
    return fn


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], density: float) -> np.ndarray:
    """float32 values ~ N(0, 1) with a fraction ``1 - density`` of exact zeros (post-ReLU-like)."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) >= density] = 0.0
    return np.abs(x)


# -- numpy itself: catches a broken emulated BLAS / libm before blaming our kernels ----------
@case
def numpy_basics() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 96)).astype(np.float32)
    b = rng.standard_normal((96, 48)).astype(np.float32)
    return {"matmul": a @ b, "tanh": np.tanh(a), "exp": np.exp(a / 4), "sum": a.sum(axis=0)}


# -- kernels ----------------------------------------------------------------------------------
@case
def sparse_matmul_kernels() -> dict[str, np.ndarray]:
    from edge_runtime.kernels import sparse_matmul as sm
    from edge_runtime.kernels.activation import RELU

    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 96)).astype(np.float32) / 16  # (K, N)
    b = rng.standard_normal(96).astype(np.float32)
    prep = sm.prepare_matmul_weights(w)
    x1 = _sparse(rng, (256,), 0.1)
    xm = _sparse(rng, (17, 256), 0.1)
    return {
        "sparse_gemv": sm.sparse_gemv(x1, prep, b, RELU),
        "dense_gemv": sm.dense_gemv(x1, prep, b, RELU),
        "sparse_matmul": sm.sparse_matmul(xm, prep, b, RELU),
        "dense_matmul": sm.dense_matmul(xm, prep, None),
    }


@case
def sparse_conv_kernels() -> dict[str, np.ndarray]:
    from edge_runtime.kernels import sparse_conv as sc
    from edge_runtime.kernels.activation import RELU

    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32) / 12  # (Cout, Cin, KH, KW)
    b = rng.standard_normal(32).astype(np.float32)
    x = _sparse(rng, (1, 16, 12, 12), 0.15)
    prep = sc.prepare_conv_weights(w)
    geo = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    w1 = sc.prepare_conv_weights(rng.standard_normal((24, 16, 1, 1)).astype(np.float32))
    return {
        "sparse_conv2d": sc.sparse_conv2d(x, prep, b, act=RELU, **geo),
        "dense_conv2d": sc.dense_conv2d(x, prep, b, act=RELU, **geo),
        "sparse_conv1x1": sc.sparse_conv1x1_nchw(x, w1, None, RELU),
    }


@case
def dense_conv_kernels() -> dict[str, np.ndarray]:
    from edge_runtime.kernels import conv, depthwise
    from edge_runtime.kernels.activation import CLIP

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32) / 8
    wd = rng.standard_normal((8, 3, 3)).astype(np.float32)
    return {
        "dense_conv": conv.dense_conv(x, conv.prepare_conv(w), None, (2, 2), (1, 1, 1, 1)),
        "depthwise": depthwise.depthwise_conv2d(x, wd, None, (1, 1), (1, 1, 1, 1), (1, 1),
                                                CLIP, 0.0, 6.0),
    }


# -- whole models through InferenceSession (and onnxruntime, as a second opinion) -------------
def _mlp_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((64, 128)).astype(np.float32) / 8
    w2 = rng.standard_normal((128, 10)).astype(np.float32) / 11
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.full(128, -0.3, np.float32), "b1")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]),  # mostly zeros: the sparse path
             helper.make_node("MatMul", ["h", "w2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _cnn_model() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32) / 5
    w2 = rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.full(16, -0.2, np.float32), "b1")]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], **conv),
             helper.make_node("Relu", ["c2"], ["y"])]
    g = helper.make_graph(nodes, "cnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _session_outputs(model: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    from edge_runtime.session import InferenceSession

    out = {}
    for mode in ("off", "force", "auto"):
        sess = InferenceSession(model, sparsity=mode)
        out[f"edge_runtime_{mode}"] = sess.run(None, {"x": x})[0]
    return out


@case
def mlp_session() -> dict[str, np.ndarray]:
    x = np.random.default_rng(6).standard_normal((8, 64)).astype(np.float32)
    return _session_outputs(_mlp_model(), x)


@case
def cnn_session() -> dict[str, np.ndarray]:
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)
    return _session_outputs(_cnn_model(), x)


@case
def onnxruntime_reference() -> dict[str, np.ndarray]:
    import onnxruntime as ort

    out = {}
    for name, model, x in (
        ("mlp", _mlp_model(), np.random.default_rng(6).standard_normal((8, 64)).astype(np.float32)),
        ("cnn", _cnn_model(), np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)),
    ):
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        out[name] = sess.run(None, {"x": x})[0]
    return out


# -- a bundle exported on the host (CI: the demo's) ------------------------------------------
# run_tests.sh copies it into the root and passes its path in EDGE_RUNTIME_ARM64_BUNDLE (the
# host's path on the host, the copy's inside the root); without it this case is skipped.
@case
def exported_bundle() -> dict[str, np.ndarray]:
    """A bundle exported on the host: its model on its golden inputs, in every sparsity mode."""
    path = os.environ.get("EDGE_RUNTIME_ARM64_BUNDLE")
    if not path:
        raise NotImplementedError("no bundle: set EDGE_RUNTIME_ARM64_BUNDLE to a bundle exported on the host")
    from edge_runtime import InferenceSession
    from edge_runtime.bundle import load_bundle

    bundle = load_bundle(path)  # checks every file's sha256 first
    with np.load(bundle.golden_path, allow_pickle=False) as golden:
        x = golden["x"]
    out = {}
    for mode in ("off", "auto", "force"):
        sess = InferenceSession(bundle.require_onnx(), sparsity=mode)
        out[mode] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return out


def run(out: Path, only: list[str] | None) -> int:
    """Evaluate the cases and write their outputs to ``out``; returns 0."""
    record: dict[str, object] = {"machine": platform.machine(), "python": platform.python_version(),
                                 "numpy": np.__version__, "cases": {}, "seconds": {}}
    arrays: dict[str, np.ndarray] = {}
    for name, fn in CASES.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            outputs = fn()
        except SKIP_ERRORS as exc:
            record["cases"][name] = f"skipped: {type(exc).__name__}: {str(exc)[:200]}"
        except Exception as exc:  # noqa: BLE001 - every failure is data for `compare`
            record["cases"][name] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
            traceback.print_exc()
        else:
            record["cases"][name] = "ok"
            for key, value in outputs.items():
                arrays[f"{name}/{key}"] = np.asarray(value)
        record["seconds"][name] = round(time.perf_counter() - t0, 3)
        print(f"[{record['machine']}] {name}: {record['cases'][name]} "
              f"({record['seconds'][name]} s)", flush=True)
    np.savez(out, __record__=np.array(json.dumps(record)), **arrays)
    return 0


def _load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "__record__"}
        return json.loads(str(data["__record__"])), arrays


def compare(ref_path: Path, other_path: Path, rtol: float) -> int:
    """Compare ``other`` against ``ref``; prints one line per case and returns 0 or 1."""
    ref_rec, ref = _load(ref_path)
    oth_rec, oth = _load(other_path)
    print(f"comparing {other_path.name} ({oth_rec['machine']}) against {ref_path.name} "
          f"({ref_rec['machine']}), tolerance max|a-b| <= {rtol:g} * max(max|ref|, 1)")
    failures = 0
    for name in sorted(set(ref_rec["cases"]) | set(oth_rec["cases"])):
        r, o = ref_rec["cases"].get(name, "missing"), oth_rec["cases"].get(name, "missing")
        if r != "ok" or o != "ok":
            bad = (r == "ok") != (o == "ok") or r.startswith("error") or o.startswith("error")
            failures += bad
            print(f"  {'FAIL' if bad else 'skip'} {name}: ref {r!r}; other {o!r}")
            continue
        for key in sorted(k for k in ref if k.startswith(name + "/")):
            a, b = oth.get(key), ref[key]
            if a is None or a.shape != b.shape:
                failures += 1
                print(f"  FAIL {key}: shape {None if a is None else a.shape} vs {b.shape}")
                continue
            scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1.0)
            err = float(np.max(np.abs(a.astype(np.float64) - b))) if b.size else 0.0
            ok = err <= rtol * scale and bool(np.all(np.isfinite(a) == np.isfinite(b)))
            failures += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {key}: max abs err {err:.3g} (scale {scale:.3g})")
    print(f"{'FAILED' if failures else 'PASSED'}: {failures} mismatch(es)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="evaluate the cases, write an .npz")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--only", nargs="*", help=f"case names (default all: {', '.join(CASES)})")
    c = sub.add_parser("compare", help="compare OTHER against REF")
    c.add_argument("ref", type=Path)
    c.add_argument("other", type=Path)
    c.add_argument("--rtol", type=float, default=1e-4)
    args = p.parse_args(argv)
    if args.cmd == "run":
        return run(args.out, args.only)
    return compare(args.ref, args.other, args.rtol)


if __name__ == "__main__":
    sys.exit(main())
