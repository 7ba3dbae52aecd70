"""Errors raised by :mod:`exporters.sparsity`.

``SparsifyError`` derives from ``ValueError`` only: importing ``edge_runtime.errors``
would import the whole runtime package, and the training-side modules must not depend
on it.
"""
from __future__ import annotations


class SparsifyError(ValueError):
    """A sparsity recipe, module argument or calibration input is invalid.

    The message names the offending value, what was expected and how to fix it.
    """
