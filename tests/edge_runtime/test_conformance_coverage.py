"""Every op the runtime registers is run against ONNX's backend node cases by some family test file."""
from __future__ import annotations

import edge_runtime
from tests.edge_runtime.conformance import family_modules


def test_every_registered_op_has_a_conformance_family():
    covered = {op for module in family_modules() for op in module.OP_TYPES}
    registered = {op for domain, op in edge_runtime.supported_ops() if domain == ""}
    missing = sorted(registered - covered)
    assert not missing, f"ops registered without conformance tests: {missing}"
