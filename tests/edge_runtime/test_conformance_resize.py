"""ONNX backend conformance for Resize and Upsample (edge_runtime/ops/resize.py)."""
from __future__ import annotations

from tests.edge_runtime import conformance

OP_TYPES = ("Resize", "Upsample")

EXCLUSIONS: dict[str, str] = {}

PARAMS = conformance.params_for(OP_TYPES, EXCLUSIONS)


test_case, test_every_op_runs = conformance.family_tests(OP_TYPES, PARAMS)
