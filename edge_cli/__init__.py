"""The ``edge-runtime`` command line, above :mod:`edge_runtime`, :mod:`exporters` and :mod:`device_profiles`.

It imports the three packages' command modules with ordinary imports and owns the one error
boundary of every command (:func:`edge_cli.main.main`).
"""
from __future__ import annotations
