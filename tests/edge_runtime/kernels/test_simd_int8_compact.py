"""The VBMI2 compaction into the packed list against the portable set-bit walk (lists and conv outputs)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.kernels import simd
from edge_runtime.kernels import sparse_int8_conv as sic
from edge_runtime.kernels.simd_int8_compact import HAS_VBMI2, host_has_vbmi2
from tests.edge_runtime.kernels.test_sparse_int8 import DTYPES, activations, ref_conv

needs_vbmi2 = pytest.mark.skipif(not HAS_VBMI2, reason="numba's JIT target has no AVX-512 VBMI2 (vpcompressb)")

# zero points at both ends of the range (every value >= zp: the packed list is used) and inside
# it (values below zp: the image is redone by the set-bit walk)
dtype_zp = st.sampled_from(["uint8", "int8"]).flatmap(
    lambda d: st.tuples(st.just(d), st.sampled_from([DTYPES[d][1], 0, DTYPES[d][2], 3 if d == "uint8" else -7])))
channels = st.sampled_from([1, 5, 63, 64, 65, 100, 127, 128, 130, 192, 200])
densities = st.sampled_from([0.0, 0.1, 0.5, 1.0])


def _lists(xt, zp, pads, rs):
    h, w, c = xt.shape
    hp, wpad = h + 2 * pads, w + 2 * pads
    ptr_a, ptr_b = np.empty(hp * wpad + 1, np.int64), np.empty(hp * wpad + 1, np.int64)
    vals, idx = np.empty(h * w * c, np.int32), np.empty(h * w * c, np.int32)
    vb, off = np.empty(h * w * c + 64, np.uint8), np.empty(h * w * c + 64, np.int32)
    u8_a = sic._compact_pixels(xt, np.int32(zp), hp, wpad, pads, pads, ptr_a, vals, idx)
    u8_b = sic._compact_pixels_packed(xt, np.int32(zp), hp, wpad, pads, pads, ptr_b, vb, off, rs)
    return (u8_a, ptr_a, vals, idx), (u8_b, ptr_b, vb, off)


@needs_vbmi2
@settings(max_examples=40, deadline=None)
@given(c=channels, hw=st.tuples(st.integers(1, 6), st.integers(1, 6)), pads=st.sampled_from([0, 1, 2]),
       rs=st.sampled_from([16, 48, 64, 208]), dz=dtype_zp, density=densities, seed=st.integers(0, 2**16))
def test_packed_compaction_is_the_set_bit_walk_packed(c, hw, pads, rs, dz, density, seed):
    dtype, zp = dz
    x = activations(np.random.default_rng(seed), (*hw, c), dtype, zp, density)  # (H, W, C) pixel rows
    (u8_a, ptr_a, vals, idx), (u8_b, ptr_b, vb, off) = _lists(x, zp, pads, rs)
    assert u8_a == u8_b
    np.testing.assert_array_equal(ptr_b, ptr_a)
    nnz = ptr_a[-1]
    assert nnz == np.count_nonzero(x != zp)
    if u8_b:  # the packed list is defined only where every centred value is in [0, 255]
        np.testing.assert_array_equal(vb[:nnz], vals[:nnz].astype(np.uint8))
        np.testing.assert_array_equal(off[:nnz], idx[:nnz] * rs)


@needs_vbmi2
@settings(max_examples=25, deadline=None)
@given(c=channels, m=st.sampled_from([1, 16, 40, 64, 100, 128, 130]),
       hw=st.tuples(st.integers(1, 6), st.integers(1, 6)), stride=st.sampled_from([1, 2]),
       dz=dtype_zp, density=densities, seed=st.integers(0, 2**16))
def test_vbmi2_conv_image_equals_the_list_path(c, m, hw, stride, dz, density, seed):
    dtype, zp = dz
    rng = np.random.default_rng(seed)
    x = activations(rng, (1, c, *hw), dtype, zp, density)
    w = rng.integers(-128, 128, (m, c, 3, 3)).astype(np.int8)
    prep = sic.prepare_int8_conv(w)
    oh, ow = (hw[0] + 2 - 3) // stride + 1, (hw[1] + 2 - 3) // stride + 1
    xt = np.ascontiguousarray(x[0].transpose(1, 2, 0))
    accs = []
    for image in (sic._conv_image_list, sic._conv_image_vbmi2):
        acc = np.full((oh * ow, prep.wt.shape[1]), -1, np.int32)
        image(xt, np.int32(zp), prep.wt, 3, 3, stride, stride, 1, 1, 1, 1, oh, ow, acc)
        accs.append(acc)
    np.testing.assert_array_equal(accs[1], accs[0])
    want = ref_conv(x, w, zp, (stride, stride), (1, 1, 1, 1), (1, 1))[0]  # (M, OH, OW)
    np.testing.assert_array_equal(accs[1][:, :m].T.reshape(m, oh, ow), want)


@pytest.mark.parametrize("name, features, want", [
    ("icelake-server", None, False),  # a named CPU without a feature list: no vpcompressb in a portable cache
    ("haswell", "+avx2,+fma", False), ("host", "+avx512f,+avx512bw,+avx512vnni", False),
    ("host", "+avx512f,+avx512bw,+avx512vnni,+avx512vbmi2", True), ("host", "+avx512f,+avx512vbmi2", False),
])
def test_vbmi2_detection_follows_numba_target(monkeypatch, name, features, want):
    """NUMBA_CPU_NAME / NUMBA_CPU_FEATURES retarget the JIT; without VBMI2 (or VNNI) the set-bit walk stays."""
    monkeypatch.setattr(simd.numba_config, "CPU_NAME", name)
    monkeypatch.setattr(simd.numba_config, "CPU_FEATURES", features)
    assert host_has_vbmi2() is want


def test_the_conv_takes_the_packed_compaction_exactly_on_vbmi2_hosts():
    assert sic._conv_image is (sic._conv_image_vbmi2 if HAS_VBMI2 else sic._conv_image_list)
