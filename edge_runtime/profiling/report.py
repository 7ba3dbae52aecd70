"""Render a :class:`ProfileResult`: JSON, a text report, and a matplotlib chart."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge_runtime.outputs import atomic_path, write_atomic
from edge_runtime.profiling.backends import onnxruntime_twin

log = logging.getLogger(__name__)


def write_json(result: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``result.to_dict()`` to ``path`` as indented JSON, atomically; return the path.

    Raises:
        InvalidArgumentError: ``path`` exists and ``overwrite`` is False.
    """
    return write_atomic(path, json.dumps(result.to_dict(), indent=2, default=str) + "\n", overwrite=overwrite)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def speed_words(ratio: float | None, reference: str = "onnxruntime") -> str:
    """A time ratio (this / reference) in words: "1.90x slower than onnxruntime", "2.10x faster than ...".

    Example:
        >>> speed_words(0.5), speed_words(1.9)
        ('2.00x faster than onnxruntime', '1.90x slower than onnxruntime')
    """
    if ratio is None or ratio <= 0:
        return "-"
    if ratio >= 1.03:
        return f"{ratio:.2f}x slower than {reference}"
    if ratio <= 1 / 1.03:
        return f"{1 / ratio:.2f}x faster than {reference}"
    return f"as fast as {reference} ({ratio:.2f}x its time)"


def backend_table(result: Any) -> list[str]:
    """One line per backend: init, first run, percentiles, items/s, memory, speed against onnxruntime."""
    width = max([12, *(len(b.backend) for b in result.backends)])
    head = (f"{'backend':<{width}} {'init ms':>8} {'1st ms':>8} {'mean':>8} {'std':>7} {'min':>8} {'p50':>8} "
            f"{'p90':>8} {'p99':>8} {'max':>8} {'items/s':>9} {'mem MB':>7} {'rss MB':>7}  p50 vs onnxruntime")
    lines = [head, "-" * len(head)]
    for b in result.backends:
        t, twin = b.timing, onnxruntime_twin(b.backend)
        lines.append(f"{b.backend:<{width}} {b.init_ms:8.1f} {b.first_run_ms:8.2f} {t.mean_ms:8.3f} {t.std_ms:7.3f} "
                     f"{t.min_ms:8.3f} {t.p50_ms:8.3f} {t.p90_ms:8.3f} {t.p99_ms:8.3f} {t.max_ms:8.3f} "
                     f"{t.items_per_s:9.1f} {b.peak_memory_mb:7.1f} {b.maxrss_delta_mb:7.1f}  "
                     f"{speed_words(b.ratio_p50_vs_onnxruntime, twin) if b.backend != twin else '-'}")
    for name, why in result.skipped:
        lines.append(f"{name:<{width}} skipped: {why}")
    lines += [f"why: {line}" for line in slower_reasons(result)]
    return lines


def slower_reasons(result: Any) -> list[str]:
    """Why a backend is slower than another, in words, from what was measured."""
    by = {b.backend: b for b in result.backends}
    out = []
    edge, dense = by.get("edge"), by.get("edge-dense")
    if edge and dense and edge.timing.p50_ms > 1.03 * dense.timing.p50_ms:
        sparse = [r for r in edge.layers if r.kernel == "sparse"]
        if not sparse:
            out.append(f"edge is {edge.timing.p50_ms / dense.timing.p50_ms:.2f}x slower than edge-dense: no layer's "
                       f"input was sparse enough for a sparse kernel, so edge ran the dense kernels plus its "
                       f"per-layer density checks (the cost of looking for zeros).")
        else:
            out.append(f"edge is {edge.timing.p50_ms / dense.timing.p50_ms:.2f}x slower than edge-dense: its "
                       f"{len(sparse)} sparse layer(s) ran at densities where skipping zeros did not pay here "
                       f"(densities {', '.join(f'{r.density:.2f}' for r in sparse[:4] if r.density is not None)}); "
                       f"calibrate this machine's crossovers with `edge-runtime devices calibrate`.")
    for b in (by.get(n) for n in ("edge", "edge-dense", "edge-numba", "edge-int8")):
        if b and b.engine:
            out.append(f"{b.backend} ran as {' + '.join(b.providers)}: {b.engine}.")
    for name in ("edge", "edge-dense", "edge-numba", "edge-int8", "edge-numba-int8"):
        b = by.get(name)
        if b and b.ratio_p50_vs_onnxruntime and b.ratio_p50_vs_onnxruntime > 1.03 and \
                "EdgeRuntimeExecutionProvider" in b.providers:
            share = sum(r.time_ms for r in b.layers) / b.timing.p50_ms if b.layers and b.timing.p50_ms else None
            where = (f"; its layers account for {100 * min(share, 1.0):.0f}% of its time, the rest is per-call "
                     f"Python overhead" if share else "")
            out.append(f"{name} is {speed_words(b.ratio_p50_vs_onnxruntime, onnxruntime_twin(name))}: "
                       f"onnxruntime runs its tuned C++ kernels "
                       f"(MLAS) in one native call, edge_runtime dispatches each layer from "
                       f"Python to numba/BLAS kernels{where}.")
    return out


def display_name(result: Any, node: str) -> str:
    """The PyTorch module name of an ONNX node when the exporter recorded it, else the node name."""
    return dict(getattr(result, "module_names", ()) or ()).get(node, node)


def layer_table_lines(backend: Any, limit: int | None = None, result: Any = None) -> list[str]:
    """The per-layer table of an edge backend, slowest layers first when ``limit`` is set.

    ``density`` is the layer's measured input density: the fraction of nonzero inputs.
    """
    rows = list(backend.layers)
    if limit is not None:
        rows = sorted(rows, key=lambda r: -r.time_ms)[:limit]
    head = (f"{'layer':<28} {'op':<12} {'output shape':<18} {'ms':>8} {'%':>6} {'density':>7} {'kernel':<6} "
            f"{'MFLOPs':>9} {'skipped':>9}")
    lines = [f"layers ({backend.backend}, median of the profiled calls; density = fraction of nonzero inputs):",
             head, "-" * len(head)]
    for r in rows:
        name = display_name(result, r.name) if result is not None else r.name
        lines.append(f"{name[:28]:<28} {r.op_type[:12]:<12} {str(list(r.output_shape))[:18]:<18} "
                     f"{r.time_ms:8.3f} {r.time_pct:6.1f} {_fmt(r.density):>7} {r.kernel:<6} "
                     f"{r.flops / 1e6:9.2f} {r.flops_skipped / 1e6:9.2f}")
    return lines


def estimate_lines(result: Any) -> list[str]:
    """Per device: the tuned-runtime ESTIMATE (threads, budget verdict) and edge_runtime's figure beside it."""
    lines = []
    for e in result.estimates:
        verdict = ""
        if e.budget_ms is not None:
            who = "edge_runtime " if e.edge_runtime_ms is not None else ""
            verdict = f"; budget {e.budget_ms:g} ms: {who}{'meets it' if e.meets_budget else 'MISSES it'}"
        lines.append(f"{e.device:<18} ESTIMATE {e.latency_ms:9.2f} ms for {e.runtime}, {e.threads} threads "
                     f"(roofline {e.roofline_ms:.2f} ms x {e.efficiency:.2f}, "
                     f"{100 * e.compute_bound_fraction:.0f}% compute-bound)"
                     + ("" if e.edge_runtime_ms is not None else verdict))
        if e.edge_runtime_ms is not None:
            lines.append(f"{'':<18} edge_runtime ~{e.edge_runtime_ms:8.2f} ms ({e.edge_runtime_basis}){verdict}")
    return lines


def format_text(result: Any, layer_limit: int | None = 20) -> str:
    """The whole report as text (what the CLI prints)."""
    lines = [f"model {result.model}: batch {result.batch}, {result.threads} threads, {result.runs} runs "
             f"after {result.warmup} warm-up, input {result.input}", ""]
    lines += backend_table(result)
    for b in result.backends:
        if b.layers:
            lines += [""] + layer_table_lines(b, layer_limit, result)
    if result.estimates:
        lines += ["", "estimated latency on other devices (cost model, NOT measured):"] + estimate_lines(result)
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def plot(result: Any, path: str | Path, *, overwrite: bool = False) -> Path | None:
    """Save a chart: per-layer time and density of the first edge backend, latency per backend and device.

    Returns:
        The path written, or None when matplotlib is not installed (logged).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart written to %s (pip install matplotlib)", path)
        return None
    edge = next((b for b in result.backends if b.layers), None)
    fig, axes = plt.subplots(1, 2 if edge else 1, figsize=(14 if edge else 6, 5.5), squeeze=False)
    _latency_axis(axes[0][0], result)
    if edge:
        _layer_axis(axes[0][1], edge, result)
    fig.tight_layout()
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _latency_axis(ax: Any, result: Any) -> None:
    names = [b.backend for b in result.backends] + [f"{e.device}\n(estimate)" for e in result.estimates]
    values = [b.timing.p50_ms for b in result.backends] + [e.latency_ms for e in result.estimates]
    colors = ["tab:blue"] * len(result.backends) + ["tab:gray"] * len(result.estimates)
    ax.bar(range(len(names)), values, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("p50 latency (ms); grey bars: estimates")
    ax.set_title("latency per backend (measured) and device (estimated)")


def _layer_axis(ax: Any, backend: Any, result: Any = None) -> None:
    names = [display_name(result, r.name) if result is not None else r.name for r in backend.layers]
    xs = range(len(backend.layers))
    colors = ["tab:green" if r.kernel == "sparse" else "tab:blue" for r in backend.layers]
    ax.bar(xs, [r.time_ms for r in backend.layers], color=colors)
    ax.set_xticks(list(xs), [n[-24:] for n in names], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("time per call (ms); green: sparse kernel")
    ax.set_title(f"per-layer time and input density ({backend.backend})")
    twin = ax.twinx()
    dens = [(i, r.density) for i, r in enumerate(backend.layers) if r.density is not None]
    if dens:
        twin.plot([i for i, _ in dens], [d for _, d in dens], "o", color="tab:red", markersize=4)
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("input density (fraction of nonzeros)", color="tab:red")
