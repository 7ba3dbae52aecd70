"""Every op the runtime registers is run against ONNX's backend node cases by some family test file."""
from __future__ import annotations

import importlib
import pkgutil

import edge_runtime
import tests.edge_runtime as pkg


def _family_op_types() -> dict[str, str]:
    covered: dict[str, str] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("test_conformance_") and info.name != "test_conformance_coverage":
            module = importlib.import_module(f"tests.edge_runtime.{info.name}")
            for op in getattr(module, "OP_TYPES", ()):
                covered[op] = info.name
    return covered


def test_every_registered_op_has_a_conformance_family():
    covered = _family_op_types()
    registered = {op for domain, op in edge_runtime.supported_ops() if domain == ""}
    missing = sorted(registered - set(covered))
    assert not missing, f"ops registered without conformance tests: {missing}"
