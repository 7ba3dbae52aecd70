"""Errors raised by :mod:`exporters.sparsity`."""
from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class SparsifyError(EdgeRuntimeError, ValueError):
    """A sparsity recipe, module argument or calibration input is invalid.

    The message names the offending value, what was expected and how to fix it. Part of the
    project's one error hierarchy, so ``except EdgeRuntimeError`` (and the CLI) catch it.
    """
