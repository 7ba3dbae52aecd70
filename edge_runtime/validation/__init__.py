"""Validate exported bundles (checksums, outputs vs PyTorch, accuracy, robustness) and run them on images.

Public API::

    from edge_runtime.validation import validate_bundle, run_bundle
    report = validate_bundle("out/bundle", data="val_images/")   # ValidationReport
    results = run_bundle("out/bundle", ["images/"])               # list[Result]

Torch-free: only numpy, onnx, numba (and Pillow for images, tqdm for progress, lazily).
"""
from __future__ import annotations

from edge_runtime.validation.datasets import LabelledData, load_labelled
from edge_runtime.validation.perturb import PERTURBATIONS, SEVERITIES
from edge_runtime.validation.report import ValidationReport, render_markdown, write_json, write_markdown
from edge_runtime.validation.run import BundleRunner, Result, run_bundle, watch, write_results
from edge_runtime.validation.validate import DEFAULT_ATOL, DEFAULT_BACKENDS, validate_bundle

__all__ = [
    "BundleRunner", "DEFAULT_ATOL", "DEFAULT_BACKENDS", "LabelledData", "PERTURBATIONS", "Result",
    "SEVERITIES", "ValidationReport", "load_labelled", "render_markdown", "run_bundle",
    "validate_bundle", "watch", "write_json", "write_markdown", "write_results",
]
