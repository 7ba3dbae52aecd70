"""Compiled QGemm epilogue and per-tensor quantize/dequantize equal the numpy ops they replace (bit for bit)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.kernels.qgemm_epilogue import qgemm_float, qgemm_quantized
from edge_runtime.kernels.quantize import dequantize_tensor, quantize_tensor
from edge_runtime.ops.quant_contrib import qgemm_output
from edge_runtime.ops.quantize import DequantizeLinear, dequantize, quantize

BYTES = {np.uint8: (0, 255), np.int8: (-128, 127)}


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("per_column", [False, True])
def test_qgemm_epilogue_equals_numpy(dtype, per_column):
    rng = np.random.default_rng(int(per_column))
    m, n = 5, 37
    acc = rng.integers(-300000, 300000, (m, n)).astype(np.int32)
    c = rng.integers(-5000, 5000, n).astype(np.int32)
    a_scale = np.float32(0.0173)
    b_scale = rng.uniform(1e-3, 1e-2, n).astype(np.float32) if per_column else np.float32(0.0061)
    y_scale, y_zp = np.float32(0.37), dtype(9 if dtype == np.uint8 else -4)
    scale = np.float32(1.0) * a_scale * np.asarray(b_scale, np.float32)
    scale_n = np.ascontiguousarray(np.broadcast_to(scale.reshape(-1), (n,)), np.float32)
    a = np.zeros((m, 3), dtype)
    out = np.empty((m, n), np.float32)
    qgemm_float(acc, c, scale_n, out)
    np.testing.assert_array_equal(out, qgemm_output(acc, c, 1.0, a_scale, b_scale, None, None, a))
    ref = qgemm_output(acc, c, 1.0, a_scale, b_scale, y_scale, y_zp, a)
    assert len(np.unique(ref)) > 20  # not all saturated
    q = np.empty((m, n), dtype)
    table = np.random.default_rng(2).integers(0, 256, 256).astype(np.uint8)
    for use_table in (False, True):
        qgemm_quantized(acc, c, scale_n, float(y_scale), int(y_zp), dtype == np.uint8, q, table.view(dtype), use_table)
        np.testing.assert_array_equal(q, table.view(dtype)[ref.view(np.uint8)] if use_table else ref)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_quantize_and_dequantize_equal_numpy(dtype):
    rng = np.random.default_rng(3)
    scale = np.float32(0.05)
    zp = 3 if dtype == np.uint8 else -7
    x = np.concatenate([rng.uniform(-9, 9, 4000).astype(np.float32), (np.arange(-40, 40) + 0.5).astype(np.float32)
                        * scale, np.array([np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0], np.float32)])  # ties, extremes
    lo, hi = BYTES[dtype]
    q = np.empty(x.shape, dtype)
    assert quantize_tensor(x, scale, zp, lo, hi, q)
    np.testing.assert_array_equal(q, quantize(x, scale, zp, np.dtype(dtype)))
    d = np.empty(x.shape, np.float32)
    dequantize_tensor(q, scale, zp, d)
    np.testing.assert_array_equal(d, dequantize(q, scale, zp))
    assert not quantize_tensor(np.array([1.0, np.nan], np.float32), scale, zp, lo, hi, q[:2])  # NaN: numpy's path


def test_dequantize_linear_per_tensor_keeps_the_shape():
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    y = DequantizeLinear(x, np.float32(0.5), np.uint8(2))
    assert y.shape == (2, 3, 4) and y.dtype == np.float32 and y[0, 0, 0] == -1.0
