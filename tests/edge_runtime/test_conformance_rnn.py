"""ONNX backend node conformance for the recurrent ops (ops/rnn.py) and LRN (ops/norm.py)."""
from __future__ import annotations

from tests.edge_runtime import conformance

OP_TYPES = ("LSTM", "GRU", "RNN", "LRN")

#: case name -> why it cannot pass (dtype exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)
