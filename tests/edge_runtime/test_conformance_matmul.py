"""ONNX backend node conformance for MatMul/Gemm, and the internal fused ops against numpy."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.kernels import activation as act
from edge_runtime.ops.registry import INTERNAL_DOMAIN, resolve
from tests.edge_runtime import conformance

OP_TYPES = ("MatMul", "Gemm")

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)


def _activate(y, code, p0, p1):
    return {act.NONE: y, act.RELU: np.maximum(y, 0), act.CLIP: np.clip(y, p0, p1),
            act.LEAKY_RELU: np.where(y >= 0, y, p0 * y), act.THRESHOLD_RELU: np.where(y >= p0, y, 0)}[code]


ACTIVATIONS = [(act.NONE, 0.0, 0.0), (act.RELU, 0.0, 0.0), (act.CLIP, 0.0, 6.0), (act.LEAKY_RELU, 0.1, 0.0),
               (act.THRESHOLD_RELU, 0.5, 0.0)]


@pytest.mark.parametrize("code,p0,p1", ACTIVATIONS)
@pytest.mark.parametrize("transA,transB", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), (3, 1), (3, 5), ()])
def test_fused_gemm_matches_numpy(code, p0, p1, transA, transB, c_shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3) if transA else (3, 4)).astype(np.float32)
    b = rng.standard_normal((5, 4) if transB else (4, 5)).astype(np.float32)
    c = None if c_shape is None else rng.standard_normal(c_shape).astype(np.float32)
    fn = resolve(INTERNAL_DOMAIN, "FusedGemm", 1)[0].fn
    got = fn(a, b, c, alpha=0.5, beta=2.0, transA=transA, transB=transB, activation=code, act_p0=p0, act_p1=p1)
    ref = 0.5 * ((a.T if transA else a) @ (b.T if transB else b)) + (0 if c is None else 2.0 * c)
    assert got.dtype == np.float32 and got.shape == (3, 5)
    np.testing.assert_allclose(got, _activate(ref, code, p0, p1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("code,p0,p1", ACTIVATIONS)
@pytest.mark.parametrize("a_shape,b_shape", [((2, 7, 8), (8, 6)), ((7, 8), (8, 6)), ((2, 3, 7, 8), (3, 8, 6)),
                                             ((8,), (8, 6)), ((2, 7, 8), (8,))])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_matmul_matches_numpy(code, p0, p1, a_shape, b_shape, with_bias):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    ref = np.matmul(a, b)
    bias = rng.standard_normal(ref.shape[-1:]).astype(np.float32) if with_bias and ref.ndim else None
    fn = resolve(INTERNAL_DOMAIN, "FusedMatMul", 1)[0].fn
    got = fn(a, b, bias, activation=code, act_p0=p0, act_p1=p1)
    want = _activate(ref + (0 if bias is None else bias), code, p0, p1)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batched_matmul_fast_path_handles_non_contiguous_input():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((7, 2, 8)).astype(np.float32).transpose(1, 0, 2)  # (2, 7, 8), not contiguous
    b = rng.standard_normal((8, 6)).astype(np.float32)
    got = resolve("", "MatMul", 13)[0].fn(a, b)
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-5, atol=1e-6)
