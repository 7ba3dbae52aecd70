"""Export trained PyTorch models to annotated ONNX/TFLite bundles, and make them sparser.

Public API::

    from exporters import calibrate, export
    report = calibrate(model, calibration_data)      # SparsityReport
    bundle = export(model, example, "out/bundle", calibration=report)
"""
from __future__ import annotations

from exporters.bundle import Bundle, export
from exporters.calibrate import LayerStats, SparsityReport, calibrate
from exporters.errors import ExportError
from exporters.spec import load_model

__all__ = ["Bundle", "ExportError", "LayerStats", "SparsityReport", "calibrate", "export",
           "load_model"]
