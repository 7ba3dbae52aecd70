"""Depthwise kernel (stride-1 flat-plane path and strided stride-phase path) against a direct numpy reference."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.kernels.depthwise import depthwise_conv2d


def _reference(x, w, b, strides, pads, dilations, act, p0, p1):
    n, c, h, wd = x.shape
    kh, kw = w.shape[1:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, c, oh, ow)) + b.reshape(1, c, 1, 1)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilations[0], j * dilations[1]
            patch = xp[:, :, r0:r0 + strides[0] * (oh - 1) + 1:strides[0], c0:c0 + strides[1] * (ow - 1) + 1:strides[1]]
            y += patch * w[:, i, j].reshape(1, c, 1, 1)
    if act == 2:
        y = np.clip(y, p0, p1)
    elif act == 1:
        y = np.maximum(y, 0)
    return y


CASES = [  # (n, c, h, w, k, strides, pads (t, l, b, r), dilations, act)
    (1, 960, 7, 7, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2),
    (1, 24, 14, 14, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0),
    (2, 5, 9, 6, 3, (1, 1), (2, 0, 1, 3), (2, 2), 1),    # dilation, asymmetric pads, batch 2
    (1, 7, 8, 11, 5, (1, 1), (0, 0, 0, 0), (1, 1), 2),   # no padding, 5x5
    (1, 16, 14, 14, 3, (2, 2), (1, 1, 1, 1), (1, 1), 2),  # strided: the stride-phase path
    (2, 4, 13, 11, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1),   # odd sizes: uneven phase planes
    (1, 3, 12, 15, 5, (3, 2), (2, 0, 1, 2), (2, 1), 0),   # mixed strides, dilation, asymmetric pads
    (1, 2, 9, 10, 3, (1, 2), (0, 1, 0, 1), (1, 2), 1),    # stride only along W, dilated W
    (1, 3, 1, 1, 3, (1, 1), (1, 1, 1, 1), (1, 1), 0),    # 1x1 plane
]


@pytest.mark.parametrize("case", CASES)
def test_depthwise_matches_reference(case) -> None:
    n, c, h, w, k, strides, pads, dil, act = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32) * 3
    wt = rng.standard_normal((c, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    got = depthwise_conv2d(x, wt, b, strides, pads, dil, act, 0.0, 6.0)
    want = _reference(x, wt, b, strides, pads, dil, act, 0.0, 6.0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
