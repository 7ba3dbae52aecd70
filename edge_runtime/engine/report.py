"""What the engine is given and what it reports: its configuration, the model source it takes over,
the per-island decisions and the report (``InferenceSession.engine_report``), and the inputs it
measures with. Split out of :mod:`edge_runtime.engine.hybrid` (which re-exports these names).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from edge_runtime.feeds import standard_normal
from edge_runtime.graph import ValueInfo
from edge_runtime.plan import Plan


@dataclass(frozen=True)
class EngineConfig:
    """What the hybrid planner needs from the session."""

    threads: int = 1
    sparsity: str = "auto"
    annotations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    optimize: bool = True
    #: Inputs like the ones the model will see (validated feeds); none: a synthetic one. Densities are
    #: taken at their median and plans timed over all of them (:func:`feeds`).
    warmup_feeds: tuple[Mapping[str, np.ndarray], ...] = ()
    #: Builds the numba engine's plan of the whole model; timed against a cut plan that keeps islands.
    #: It may drop the proto of a disposable :class:`ModelSource` (nothing reads it after this plan).
    numba_plan: Callable[[], Plan] | None = field(default=None, compare=False)
    #: What builds the islands' kernels: "numba" or "numpy" (``SessionOptions.sparse_kernels``), or
    #: "compiled" (:mod:`edge_runtime.engine.aot`, chosen by :func:`edge_runtime.engine.hybrid.build`).
    sparse_kernels: str = "numba"


@dataclass(frozen=True)
class IslandDecision:
    """Why a layer did or did not become a sparse island (``InferenceSession.engine_report``)."""

    name: str
    expected_density: float
    density_source: str            # "annotation" | "warm-up input"
    dense_ms: float
    sparse_ms: float
    crossover: float               # per-call limit: sparse at or below this input density
    kept: bool


@dataclass(frozen=True)
class EngineReport:
    """The engine's plan: islands considered, the measured cost of cutting, and the outcome."""

    candidates: int
    islands: tuple[IslandDecision, ...] = ()
    whole_ms: float | None = None
    cut_ms: float | None = None
    outcome: str = "whole model in one onnxruntime session"
    engine: str = "onnxruntime"    # "numba" when the numba engine ran the whole model faster
    cached: bool = False           # the decision came from :mod:`edge_runtime.engine.plancache`
    #: FATReLUs (GreaterOrEqual + Where) run as one ThresholdedRelu (:mod:`edge_runtime.engine.rewrite`)
    fatrelus_rewritten: int = 0
    #: The check of a small measured gain on the first images run (:mod:`edge_runtime.engine.linecheck`):
    #: "" (none), "pending: ...", or its outcome ("checked on the first 48 images run: ...").
    line_check: str = ""
    #: What ran the kept islands' sparse path: "numba" (JIT), "compiled" (ahead of time, numba not
    #: loaded: :mod:`edge_runtime.engine.aot`), "numpy" (gather + BLAS); "" without islands.
    island_kernels: str = ""


@dataclass
class ModelSource:
    """The model as the session got it, handed to :func:`edge_runtime.engine.hybrid.build`, which then holds
    the only references.

    ``data``: its serialized bytes when the session has them whole (a file without external
    data, or bytes); ``path``: the file, which onnxruntime then reads itself for a whole-model
    session (our copy of the bytes is freed first); ``reread``: reads the bytes again (a bundle's
    model, checked again as read), for the same purpose where onnxruntime must not open the file
    by its path; ``disposable``: the session owns the proto, which is dropped (``model`` set to
    None) before onnxruntime builds a whole-model session, so the proto, the bytes and
    onnxruntime's session never coexist at the peak.
    """

    model: onnx.ModelProto | None
    data: bytes | None = None
    path: str | None = None
    disposable: bool = False
    reread: Callable[[], bytes] | None = None
    #: ``model`` lost weights its numpy islands hold (``islands.shed_weights``): load it again to run it whole.
    shed: bool = False

    def whole(self) -> str | bytes | None:
        """What onnxruntime builds a whole-model session from once our bytes are gone: the file's
        path, the bytes read again, or None when neither can be had."""
        return self.path or (self.reread() if self.reread is not None else None)

    def take(self) -> bytes:
        """The serialized model, handed over (the source keeps no reference)."""
        data = self.data if self.data is not None else self.model.SerializeToString()
        self.data = None
        return data


def with_outcome(report: EngineReport, outcome: str) -> EngineReport:
    """``report`` with another outcome line."""
    return dataclasses.replace(report, outcome=outcome)


def synthetic_feed(inputs: Sequence[ValueInfo], seed: int = 0) -> dict[str, np.ndarray]:
    """A warm-up input: N(0, 1) floats (:func:`edge_runtime.feeds.standard_normal`), zeros otherwise; free
    dimensions set to 1."""
    feed = {}
    for vi in inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in (vi.shape or ()))
        if np.issubdtype(vi.dtype, np.floating):
            feed[vi.name] = standard_normal(shape, seed).astype(vi.dtype)
            seed += 1
        else:
            feed[vi.name] = np.zeros(shape, vi.dtype)
    return feed


def feeds(cfg: EngineConfig, inputs: Sequence[ValueInfo]) -> list[Mapping[str, np.ndarray]]:
    """The inputs the engine measures with: the warm-up feeds, else one synthetic feed."""
    return list(cfg.warmup_feeds) or [synthetic_feed(inputs)]


def density(x: np.ndarray) -> float:
    """The fraction of nonzero entries of ``x`` (NaN counts as nonzero, as in the kernels)."""
    return float(np.count_nonzero(x)) / max(x.size, 1)


def at_density(x: np.ndarray, d: float, seed: int = 0) -> np.ndarray:
    """``x`` with entries zeroed (or zeros filled with |N(0, 1)|) until its density is ``d``."""
    x = np.array(x, dtype=np.float32, copy=True)
    flat = x.reshape(-1)
    nz = np.flatnonzero(flat)
    want = int(round(min(max(d, 0.0), 1.0) * flat.size))
    rng = np.random.default_rng(seed)
    if nz.size > want:
        flat[rng.choice(nz, nz.size - want, replace=False)] = 0.0
    elif nz.size < want:
        zeros = np.flatnonzero(flat == 0)
        flat[rng.choice(zeros, want - nz.size, replace=False)] = np.abs(
            rng.standard_normal(want - nz.size)).astype(np.float32) + 1e-3
    return x
