"""ONNX backend node conformance for the recurrent ops (ops/rnn.py) and LRN (ops/norm.py)."""
from __future__ import annotations

import pytest

from tests.edge_runtime import conformance

OP_TYPES = ("LSTM", "GRU", "RNN", "LRN")

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


@pytest.mark.parametrize("case", PARAMS)
def test_case(case):
    conformance.run_case(case)


def test_every_op_runs():
    conformance.assert_each_op_runs(OP_TYPES, PARAMS)
