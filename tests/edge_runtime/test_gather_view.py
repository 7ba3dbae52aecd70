"""Gather with a scalar index returns a view of strided inputs that matches np.take."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import InvalidInputError
from edge_runtime.ops.indexing import Gather


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_scalar_index_on_transposed_input_matches_take(axis):
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5).transpose(2, 0, 1)  # (5, 2, 3) strided
    dim = x.shape[axis]
    for i in range(-dim, dim):
        got = Gather(x, np.array(i, np.int64), axis=axis)
        np.testing.assert_array_equal(got, np.take(x, i, axis=axis))
        assert np.shares_memory(got, x)  # no copy


def test_scalar_index_out_of_range_raises():
    with pytest.raises(InvalidInputError, match="out of range"):
        Gather(np.zeros((4, 2), np.float32), np.array(4, np.int64), axis=0)
