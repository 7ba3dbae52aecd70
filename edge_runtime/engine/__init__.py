"""The dense engine behind :class:`edge_runtime.InferenceSession`.

Two engines run the layers that are not worth skipping zeros in:

- ``onnxruntime`` (the default when onnxruntime is installed: the ``ort`` extra): the model is
  cut into onnxruntime sessions (*segments*) around *sparse islands*, the Conv/Gemm/MatMul
  layers whose inputs are sparse enough for edge_runtime's zero-skipping kernels to win
  (:mod:`edge_runtime.engine.hybrid`); a model with no such layer runs as one onnxruntime
  session, so it is never slower than onnxruntime itself.
- ``numba``: edge_runtime's own kernels for everything (:mod:`edge_runtime.planner`), for
  devices with only numpy, onnx and numba.

:func:`choose` maps onnxruntime-style ``providers`` (or the ``EDGE_RUNTIME_DENSE_ENGINE``
environment variable) to one of them.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from edge_runtime.engine.ort import EDGE_PROVIDER, ORT_PROVIDER, available
from edge_runtime.errors import InvalidArgumentError

log = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "numba")
ENV = "EDGE_RUNTIME_DENSE_ENGINE"


def choose(providers: Sequence[Any] | None) -> str:
    """The dense engine for a session: ``"onnxruntime"`` or ``"numba"``.

    ``providers`` as onnxruntime takes them (names or ``(name, options)`` pairs):
    ``["EdgeRuntimeExecutionProvider"]`` alone selects the numba engine; a list with
    ``"CPUExecutionProvider"`` selects onnxruntime. Without providers the environment variable
    ``EDGE_RUNTIME_DENSE_ENGINE`` (``onnxruntime`` | ``numba``) decides, else onnxruntime when
    it is installed. onnxruntime asked for but not installed falls back to numba (logged).

    Raises:
        InvalidArgumentError: a bad environment value or a providers list with no CPU provider.
    """
    names = [p if isinstance(p, str) else p[0] for p in providers or ()]
    if names:
        known = [n for n in names if n in (EDGE_PROVIDER, ORT_PROVIDER)]
        skipped = [n for n in names if n not in known]
        if skipped:
            log.warning("providers %s are not available in edge_runtime (it runs on the CPU); using %s",
                        skipped, known or [ORT_PROVIDER])
        want = "numba" if known == [EDGE_PROVIDER] else "onnxruntime"
    else:
        want = os.environ.get(ENV, "").strip().lower() or "onnxruntime"
        if want not in ENGINES:
            raise InvalidArgumentError(f"{ENV}={want!r} is not a dense engine; expected one of "
                                       f"{list(ENGINES)}. Unset it to use onnxruntime when installed.")
    if want == "onnxruntime" and not available():
        log.info("onnxruntime is not installed: edge_runtime's own kernels run the dense layers "
                 "(pip install onnxruntime for onnxruntime's dense speed)")
        return "numba"
    return want
