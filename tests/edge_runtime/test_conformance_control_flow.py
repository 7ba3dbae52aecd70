"""ONNX backend node conformance for the control-flow ops (ops/control_flow.py).

The sequence/optional cases (``test_if_seq``, ``test_if_opt``, ``test_loop13_seq``,
``test_loop16_seq_none``) are excluded automatically: edge_runtime runs tensors only.
"""
from __future__ import annotations

from tests.edge_runtime import conformance

OP_TYPES = ("If", "Loop", "Scan")

#: case name -> why it cannot pass (dtype and non-tensor exclusions are automatic, see conformance.dtype_exclusion).
EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)
