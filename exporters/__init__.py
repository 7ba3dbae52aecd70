"""Export trained PyTorch models to annotated ONNX/TFLite bundles, and make them sparser.

Public API::

    from exporters import calibrate, export
    report = calibrate(model, calibration_data)      # SparsityReport
    s = sparsify(model, "relufy")                    # exporters.sparsity.sparsify
    bundle = export(model, example, "out/bundle", calibration=report)

Names are imported lazily so that ``exporters.commands`` (and ``edge-runtime inspect``)
load without torch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "Bundle": "exporters.bundle", "export": "exporters.bundle",
    "LayerStats": "exporters.calibrate", "SparsityReport": "exporters.calibrate",
    "calibrate": "exporters.calibrate", "ExportError": "exporters.errors",
    "load_model": "exporters.spec", "sparsify": "exporters.sparsity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'exporters' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``exporters.calibrate`` the function even after the submodule of the same
    name is imported (the import system would otherwise set the attribute to it)."""

    @property
    def calibrate(self) -> Any:
        return importlib.import_module("exporters.calibrate").calibrate

    @calibrate.setter
    def calibrate(self, value: Any) -> None:  # the import system's setattr: ignore
        pass


sys.modules[__name__].__class__ = _Package
