"""density(): fraction of nonzeros."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import InvalidInputError
from edge_runtime.kernels.density import density, density_at_most, row_densities


def test_density_counts_nonzeros_including_nan_and_views():
    x = np.array([[0.0, 1.0, 0.0, -2.0], [np.nan, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert density(x) == pytest.approx(3 / 8)
    assert density(x[:, ::2]) == pytest.approx(1 / 4)  # [[0, 0], [nan, 0]]
    assert isinstance(density(x), float)
    assert density(np.zeros(0, np.float32)) == 1.0
    assert density(np.zeros(7, np.float32)) == 0.0


def test_row_densities():
    x = np.array([[0, 1, 2, 0], [0, 0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(row_densities(x), [0.5, 0.0])
    with pytest.raises(InvalidInputError, match="2-D"):
        row_densities(np.zeros(3))


def test_fast_float32_count_matches_numpy_including_nan_and_views():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 50, 70)) * (rng.random((3, 50, 70)) < 0.3)).astype(np.float32)
    x[0, 0, 0] = np.nan
    for a in (x, x[:, ::2], x.transpose(2, 0, 1), x.astype(np.float64)):
        assert density(a) == pytest.approx(np.count_nonzero(a) / a.size, abs=1e-12)


@pytest.mark.parametrize("dens", [0.0, 0.05, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("limit", [0.0, 0.1, 0.5, 1.0])
def test_density_at_most_answers_exactly_and_counts_all_when_below(dens, limit):
    rng = np.random.default_rng(int(dens * 100) + int(limit * 10))
    x = (rng.standard_normal((2, 37, 301)) * (rng.random((2, 37, 301)) < dens)).astype(np.float32)
    true = np.count_nonzero(x) / x.size
    at_most, d = density_at_most(x, limit)
    assert at_most == (true <= limit)
    if at_most:
        assert d == pytest.approx(true, abs=1e-12)  # counted through: exact
    else:
        assert d > limit  # stopped early: the density of the part counted, above the limit


def test_density_at_most_stops_early_and_handles_views_and_empty():
    x = np.ones(100_000, np.float32)
    x[50_000:] = 0.0  # the counted prefix is dense, the rest is not
    at_most, d = density_at_most(x, 0.1)
    assert not at_most and d == 1.0  # stopped after the first chunk
    assert density_at_most(x, 0.5) == (True, 0.5)
    assert density_at_most(x[::2], 0.4) == (False, 0.5)  # non-contiguous: full count
    assert density_at_most(np.zeros(0, np.float32), 0.5) == (False, 1.0)
