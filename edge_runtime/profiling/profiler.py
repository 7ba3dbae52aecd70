"""``profile_model``: measure backends here, tabulate edge layers, estimate other devices.

Peak memory: ``peak_memory_mb`` is tracemalloc's peak of Python-heap allocations (numpy
buffers included) during session creation plus the first run; it misses memory that
native libraries (onnxruntime, LiteRT) allocate themselves. ``maxrss_delta_mb`` is the
growth of the process's peak resident set (``resource.getrusage``) over the same phase:
it includes native memory but reads 0 when an earlier phase already reached a higher
peak, so it depends on the backend order. Report both; trust neither alone.
"""
from __future__ import annotations

import logging
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.profiling import backends as bk
from edge_runtime.profiling import costmodel, inputs, layers, measure

log = logging.getLogger(__name__)

STATS_CALLS = 5  # run_with_stats calls per edge backend for the layer table


@dataclass(frozen=True)
class BackendResult:
    """Measured figures of one backend on this machine (times in ms)."""

    backend: str
    init_ms: float
    first_run_ms: float
    timing: measure.TimingStats
    peak_memory_mb: float
    maxrss_delta_mb: float
    ratio_p50_vs_onnxruntime: float | None      # p50 / onnxruntime p50 (int8 backends: onnxruntime-int8's)
    ratio_pairs_vs_onnxruntime: float | None    # median of per-pair time ratios
    layers: tuple[layers.LayerRow, ...] = ()
    providers: tuple[str, ...] = ()             # what ran it (edge backends: InferenceSession.get_providers())
    engine: str = ""                            # the engine's plan in words (InferenceSession.engine_report)

    def to_dict(self) -> dict[str, Any]:
        """Every figure as plain data (timing fields inlined)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("timing", "layers")}
        d.update(self.timing.to_dict())
        d["layers"] = [r.to_dict() for r in self.layers]
        return d


@dataclass(frozen=True)
class ProfileResult:
    """Everything ``profile_model`` measured and estimated.

    Example:
        >>> result = profile_model("bundle/", backends=("edge",), runs=5)  # doctest: +SKIP
        >>> result.backend("edge").timing.p50_ms  # doctest: +SKIP
    """

    model: str
    input: str
    batch: int
    threads: int
    runs: int
    warmup: int
    backends: tuple[BackendResult, ...]
    skipped: tuple[tuple[str, str], ...]        # (backend, why)
    estimates: tuple[costmodel.Estimate, ...]
    notes: tuple[str, ...] = ()
    module_names: tuple[tuple[str, str], ...] = ()  # (ONNX node, PyTorch module) from the exporter's annotation

    def backend(self, name: str) -> BackendResult:
        """The result of backend ``name``.

        Raises:
            InvalidArgumentError: the backend was not measured.
        """
        for b in self.backends:
            if b.backend == name:
                return b
        raise InvalidArgumentError(f"backend {name!r} was not measured; measured: {[b.backend for b in self.backends]}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: every figure of every backend, estimates marked ``estimate: true``."""
        return {"model": self.model, "input": self.input, "batch": self.batch, "threads": self.threads,
                "runs": self.runs, "warmup": self.warmup,
                "backends": [b.to_dict() for b in self.backends],
                "skipped": [{"backend": n, "reason": r} for n, r in self.skipped],
                "estimates": [e.to_dict() for e in self.estimates], "notes": list(self.notes),
                "module_names": dict(self.module_names)}


def _maxrss_mb() -> float:
    try:
        import resource
    except ImportError:  # not POSIX
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _open(name: str, files: bk.ModelFiles, threads: int, sparsity: str, feed: dict) -> tuple[bk.Runner, float]:
    """Open a backend and time its first run (untraced, so tracemalloc does not inflate the times)."""
    runner = bk.open_backend(name, files, threads, sparsity)
    t0 = time.perf_counter()
    runner.run(feed)
    return runner, time.perf_counter() - t0


def _memory(name: str, files: bk.ModelFiles, threads: int, sparsity: str, feed: dict) -> tuple[float, float]:
    """(tracemalloc peak MB, maxrss growth MB) of creating a second session and running it once."""
    rss0 = _maxrss_mb()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        bk.open_backend(name, files, threads, sparsity).run(feed)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        if not tracing:
            tracemalloc.stop()
    return peak, max(0.0, _maxrss_mb() - rss0)


def _open_all(names: Sequence[str], files: bk.ModelFiles, threads: int, sparsity: str, feed: dict
              ) -> tuple[dict[str, tuple[bk.Runner, float, float, float]], list[tuple[str, str]]]:
    opened, skipped = {}, []
    for name in names:
        try:
            runner, first = _open(name, files, threads, sparsity, feed)
        except bk.BackendUnavailableError as exc:
            log.warning("skipping backend %s: %s", name, exc)
            skipped.append((name, str(exc)))
            continue
        opened[name] = (runner, first, *_memory(name, files, threads, sparsity, feed))
    if not opened:
        raise bk.BackendUnavailableError(
            f"none of the backends {list(names)} can run here: " + "; ".join(f"{n}: {r}" for n, r in skipped))
    return opened, skipped


def _layer_rows(runner: bk.Runner, feeds: list[dict]) -> tuple[layers.LayerRow, ...]:
    if runner.run_with_stats is None:
        return ()
    stats = [runner.run_with_stats(feeds[i % len(feeds)])[1] for i in range(STATS_CALLS)]
    shapes = {k: tuple(v.shape) for k, v in feeds[0].items()}
    return layers.layer_table(stats, runner.session.plan.graph, shapes)


def _results(opened: dict, times: dict[str, list[float]], feeds: list[dict], batch: int
             ) -> tuple[BackendResult, ...]:
    out = []
    for name, (runner, first, peak, rss) in opened.items():
        ort = times.get(bk.onnxruntime_twin(name))  # int8 backends: against onnxruntime on the int8 model
        ort_p50 = measure.percentile(ort, 50) if ort else None
        timing = measure.summarize(times[name], batch)
        ratio = timing.p50_ms / 1e3 / ort_p50 if ort_p50 else None
        pairs = measure.pair_ratio_median(times[name], ort) if ort else None
        out.append(BackendResult(name, runner.init_seconds * 1e3, first * 1e3, timing, peak, rss, ratio, pairs,
                                 _layer_rows(runner, feeds), *_engine(runner)))
    return tuple(out)


def _engine(runner: bk.Runner) -> tuple[tuple[str, ...], str]:
    """What runs an edge backend: its providers and the engine's decision, in words."""
    if runner.run_with_stats is None:
        return (), ""
    session = runner.session
    report = session.engine_report
    if report is None:
        return tuple(session.get_providers()), "numba engine: edge_runtime's kernels run every layer"
    kept = [d for d in report.islands if d.kept]
    islands = "; ".join(f"{d.name} at density {d.expected_density:.2f} ({d.density_source}): "
                        f"{d.sparse_ms:.3f} ms sparse vs {d.dense_ms:.3f} ms dense" for d in kept[:4])
    rewritten = (f"; {report.fatrelus_rewritten} FATReLU (GreaterOrEqual + Where) run as one ThresholdedRelu "
                 "each, as fast as a Relu in onnxruntime" if report.fatrelus_rewritten else "")
    return tuple(session.get_providers()), report.outcome + (f" [{islands}]" if islands else "") + rewritten


def _estimates(proto: Any, devices: Sequence[Any], results: Sequence[BackendResult], threads: int
               ) -> tuple[tuple[costmodel.Estimate, ...], list[str]]:
    """Tuned-runtime estimates on each device (its own threads), with edge_runtime's figure beside."""
    import device_profiles

    profiles = [device_profiles.load_profile(d) for d in devices]
    targets = [p for p in profiles if p.name != "host"]
    notes = [f"{p.name}: this machine, measured above, not estimated" for p in profiles if p.name == "host"]
    if not targets:
        return (), notes
    costs = costmodel.model_costs(proto)
    edge = next((r for r in results if r.backend in bk.EDGE_BACKENDS), None)
    ort = next((r for r in results if r.backend == "onnxruntime"), None)
    densities = layers.measured_densities(edge.layers) if edge else {}
    low, high = costmodel.PUBLISHED_ERROR_BAND
    notes.append(f"device estimates are for {costmodel.TUNED_RUNTIME} with the device's own thread count: "
                 f"roofline x {costmodel.DEFAULT_EFFICIENCY}, which was {low:.2f}x-{high:.2f}x of the published "
                 f"latencies of MobileNetV2 and ResNet-18 (docs/profiling.md)")
    estimates = [costmodel.estimate_latency(costs, p, densities=densities) for p in targets]
    if edge is not None:
        host = device_profiles.load_profile("host")
        estimates = [costmodel.edge_runtime_estimate(e, p, host, edge_p50_ms=edge.timing.p50_ms,
                                                     ort_p50_ms=ort.timing.p50_ms if ort else None)
                     for e, p in zip(estimates, targets)]
    return tuple(estimates), notes


#: What ``profile`` measures when no backend is named (plus their int8 twins for a bundle with an int8 model).
DEFAULT_BACKENDS = ("edge", "edge-numba", "onnxruntime")


def profile_model(model_or_bundle: str | Path, *, backends: Sequence[str] | None = None,
                  devices: Sequence[Any] = (), runs: int = 50, warmup: int = 5, threads: int | None = None,
                  input: str | Path = "auto", progress: bool = True, sparsity: str = "auto",
                  trust: Any = None) -> ProfileResult:
    """Measure a model on this machine with several backends and estimate it on device profiles.

    Args:
        model_or_bundle: an .onnx file or a bundle directory (model.onnx, model.tflite, golden.npz),
            authenticated and checked as ``run`` checks it before anything runs, and read as checked
            (:func:`edge_runtime.profiling.inputs.model_files`).
        backends: any of :data:`edge_runtime.profiling.backends.BACKENDS`; unavailable ones are
            skipped with the reason in ``ProfileResult.skipped``. None: :data:`DEFAULT_BACKENDS`,
            with ``edge-int8``/``edge-numba-int8``/``onnxruntime-int8`` when the bundle has an int8 model
            (``litert-int8`` is measured when named, like ``litert``).
        devices: profile names/paths/``DeviceProfile`` s to estimate latency on ("host" is measured).
        runs: timed calls per backend; warmup: untimed calls per backend first.
        threads: intra-op threads for every backend (default: all CPUs available to the process).
        input: ``"auto"`` (a bundle's golden.npz, the inputs the model was exported with, whose
            activation density is what the model sees; random only for a bare .onnx),
            ``"random"``, ``"golden"`` or a .npy/.npz path.
        progress: show a tqdm progress bar when tqdm is installed.
        sparsity: edge_runtime's mode for the ``edge`` backend.
        trust: a bundle's :class:`~edge_runtime.trust.TrustPolicy` (default: the environment's and the
            config folder's pinned keys).

    Returns:
        A frozen :class:`ProfileResult`; ``.to_dict()`` for JSON.

    Raises:
        InvalidArgumentError: bad backends, runs, warmup or input.
        ProfileError: an unknown or broken device profile (checked before measuring).
        BundleError: a bundle that fails its checks or has no model.onnx, or "golden" without golden.npz.
        BackendUnavailableError: none of the backends can run here.
    """
    from edge_runtime import onnx_io
    from edge_runtime.options import available_cpus

    import device_profiles

    names = bk.check_backends(list(backends or DEFAULT_BACKENDS))
    measure.interleave({}, runs, warmup)  # validates runs / warmup before any session is built
    devices = tuple(device_profiles.load_profile(d) for d in devices)  # a bad name fails before anything is read
    files = inputs.model_files(model_or_bundle, trust)
    if backends is None:
        names = files.with_int8(names)
    if str(input) == "auto":
        input = "golden" if files.golden is not None else "random"
    proto = onnx_io.load_model_proto(files.source(files.onnx))  # a bundle's model: the bytes its checks read
    feeds, described = inputs.make_feeds(input, onnx_io.graph_from_model(proto).inputs, files)
    threads = threads or available_cpus()
    opened, skipped = _open_all(names, files, threads, sparsity, feeds[0])
    bar = measure.progress_bar(runs * len(opened), progress, f"profiling {files.onnx.name}")
    calls = {n: (lambda i, r=r[0]: r.run(feeds[i % len(feeds)])) for n, r in opened.items()}
    try:
        times = measure.interleave(calls, runs, warmup, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    batch = int(next(iter(feeds[0].values())).shape[0]) if feeds[0] and next(iter(feeds[0].values())).ndim else 1
    results = _results(opened, times, feeds, batch)
    estimates, notes = _estimates(proto, devices, results, threads)
    return ProfileResult(str(model_or_bundle), described, batch, threads, runs, warmup, results,
                         tuple(skipped), estimates, tuple(notes), _module_names(proto))


def _module_names(proto: Any) -> tuple[tuple[str, str], ...]:
    """(node, module) pairs from the exporter's sparsity annotation; () without one (never an error)."""
    from edge_runtime.annotations import read_annotations
    from edge_runtime.errors import EdgeRuntimeError

    try:
        doc = read_annotations(proto) or {}
    except EdgeRuntimeError as exc:  # a broken annotation is reported by the session, not here
        log.debug("no module names: %s", exc)
        return ()
    return tuple((layer["node"], layer["module"]) for layer in doc.get("layers", [])
                 if isinstance(layer.get("module"), str) and layer["module"])
