"""Suite-wide options.

``--dense-engine numba|onnxruntime`` chooses the dense engine every ``InferenceSession`` gets
when a test does not name one (through ``EDGE_RUNTIME_DENSE_ENGINE``, which subprocesses
inherit). The default is ``numba``: most tests check edge_runtime's own ops and kernels
against onnxruntime, which would be onnxruntime against itself on the other engine.
``.ci/run`` runs the model-level tests a second time with ``--dense-engine onnxruntime``.

The engine's decision cache (``EDGE_RUNTIME_ENGINE_CACHE``) is off in the suite, so every
session measures (tests fix the measured prices); its own tests turn it on in a temp folder.
"""
from __future__ import annotations

import os

import pytest

ENV = "EDGE_RUNTIME_DENSE_ENGINE"
CACHE_ENV = "EDGE_RUNTIME_ENGINE_CACHE"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--dense-engine", choices=("numba", "onnxruntime"), default=None,
                     help=f"dense engine for sessions that do not choose one (default: ${ENV} or numba)")


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--dense-engine")
    if chosen:
        os.environ[ENV] = chosen
    else:
        os.environ.setdefault(ENV, "numba")
    os.environ[CACHE_ENV] = "off"


@pytest.fixture
def numba_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of the numba engine's internals (its plan, dispatchers, dtype rules): pin it
    whatever --dense-engine says. The onnxruntime engine's own tests: tests/edge_runtime/engine."""
    monkeypatch.setenv(ENV, "numba")
