"""The demo's ``report.md``: sections, tables and charts built from the pipeline's results."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from edge_runtime.outputs import atomic_path
from edge_runtime.profiling.costmodel import PUBLISHED_ERROR_BAND, TUNED_RUNTIME
from edge_runtime.profiling.backends import is_int8, onnxruntime_twin
from edge_runtime.profiling.report import slower_reasons, speed_words
from edge_runtime.validation.report import write_text_atomic

log = logging.getLogger(__name__)

SECTIONS = ("Summary", "Data", "Model and sparsity", "Validation", "Latency on this machine",
            "Estimated latency on devices", "Files", "Reproduce")


def _f(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _edge_layers(profile: Any) -> dict[str, Any]:
    try:
        return {row.name: row for row in profile.backend("edge").layers}
    except Exception:  # edge was skipped: no per-layer figures
        return {}


def sparsity_chart(layers: list[dict[str, Any]], measured: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of per-layer input density (the tables' figure): calibrated (exporter) vs measured (runtime)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no sparsity chart (pip install matplotlib)")
        return None
    names = [layer.get("module") or layer["node"] for layer in layers]
    calib = [layer["density"] for layer in layers]
    run = [measured[layer["node"]].density if layer["node"] in measured and
           measured[layer["node"]].density is not None else 0.0 for layer in layers]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], calib, width=0.4, label="calibration (PyTorch)")
    ax.bar([x + 0.2 for x in xs], run, width=0.4, label="measured by edge_runtime")
    ax.set_xticks(list(xs), names, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("input density (fraction of nonzeros)")
    ax.set_xlabel("layer (PyTorch module)")
    ax.set_title("per-layer input density: lower means more zeros to skip")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def save_figure(fig: Any, path: Path, dpi: int) -> Path:
    """Lay out ``fig``, write it to ``path`` as PNG atomically (replacing the demo's own file) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _summary_section(lines: list[str]) -> list[str]:
    return ["## Summary", ""] + [f"- {line}" for line in lines] + [""]


def _data_section(settings: Any) -> list[str]:
    return ["## Data", "",
            "Synthetic surface images generated on the fly with a fixed seed (exporters/demo/dataset.py): "
            "procedural brushed-metal, woven and noise textures and CC0 photographs (brick, grass, gravel); defects are scratches, cracks, pits and stains of "
            "varied size, contrast and orientation. Classes: `ok`, `defect`.", "",
            "The validated test images are in `data/test/` in ImageFolder layout (`data/test/ok/*.png`, "
            "`data/test/defect/*.png`): the layout your own data needs for `edge-runtime validate --data`.", ""]


def _model_section(info: dict[str, Any], bundle: Any, profile: Any, chart: Path | None) -> list[str]:
    sparsity = bundle.manifest.get("sparsity") or {}
    layers = sparsity.get("layers") or []
    measured = _edge_layers(profile)
    rows = []
    for layer in layers:
        row = measured.get(layer["node"])
        rows.append([layer.get("module", "-"), f"`{layer['node']}`", _f(layer["density"], ".3f"),
                     _f(row.density if row else None, ".3f"), row.kernel if row else "-"])
    lines = ["## Model and sparsity", "", f"Model: `{bundle.manifest.get('name')}` ({info.get('source')}).", ""]
    metrics = info.get("metrics") or info
    for key, label, spec in (("test_accuracy", "test accuracy at training time", ".1%"),
                             ("defect_recall", "defect recall at training time", ".1%"),
                             ("mean_density", "mean input density of its ReLU-fed layers at training time", ".3f")):
        if isinstance(metrics.get(key), (int, float)):
            lines.append(f"- {label}: {format(metrics[key], spec)}")
    lines += ["", "*Density* is the fraction of nonzero values in a layer's input; the rest are zeros the "
              "runtime can skip (it runs a layer's sparse kernel only when the density is at or below that "
              "kernel's crossover density on the device).", "",
              f"Mean input density of all annotated layers, the first conv included (it sees the image, density "
              f"1): {_f(sparsity.get('mean_density'), '.3f')}. The training-time figure above covers only the "
              f"ReLU-fed layers, hence lower.", ""]
    lines += _table(["module", "ONNX node", "density (calibration)", "density (edge_runtime)", "kernel"], rows)
    if chart:
        lines += ["", f"![per-layer input density]({chart.name})"]
    return lines + [""]


def _validation_section(report: Any) -> list[str]:
    lines = ["## Validation", "", f"Result: **{'PASSED' if report.passed else 'FAILED'}** "
             f"(reference: {report.reference}; details in `validation.md`).", ""]
    golden = {g.backend: g for g in report.golden}
    rows = []
    for acc in report.accuracy:
        g = golden.get(acc.backend)
        rows.append([acc.backend, _f(g.max_abs if g else None, ".2e"), _f(acc.accuracy, ".1f"), _f(acc.drop, "+.2f"),
                     _f(acc.agreement, ".1f"), _f(acc.recall.get(report.defect_label or "defect"), ".1f"),
                     "yes" if acc.passed else "NO"])
    lines += _table(["backend", "max abs diff vs golden", "accuracy %", "drop pts", "agreement %",
                     "defect recall %", "passed"], rows)
    if any(is_int8(name) for name in golden):
        lines += ["", "Golden: PyTorch's outputs (golden.npz); for the int8 backends, onnxruntime's outputs of the "
                      "int8 model (golden.int8.npz), for litert-int8 LiteRT's outputs of the int8 TFLite model "
                      "(golden.int8.tflite.npz, ai-edge-quantizer). Drop and agreement: against the reference, so "
                      "the int8 rows show what quantization costs."]
    if report.perturbation:
        names = sorted({b for p in report.perturbation for b in p.accuracy})
        lines += ["", "Accuracy (%) under input corruptions (severity 0 = clean):", ""]
        lines += _table(["corruption", "severity", *names],
                        [[p.perturbation, p.severity, *[_f(p.accuracy.get(n), ".1f") for n in names]]
                         for p in report.perturbation])
    for name, why in report.skipped.items():
        lines.append(f"\n- skipped {name}: {why}")
    return lines + [""]


def _latency_section(profile: Any) -> list[str]:
    rows = [[b.backend, _f(b.init_ms, ".0f"), _f(b.first_run_ms, ".1f"), _f(b.timing.p50_ms, ".2f"),
             _f(b.timing.p90_ms, ".2f"), _f(b.timing.p99_ms, ".2f"), _f(b.timing.items_per_s, ".0f"),
             "-" if b.backend == onnxruntime_twin(b.backend) else
             speed_words(b.ratio_p50_vs_onnxruntime, onnxruntime_twin(b.backend))]
            for b in profile.backends]
    lines = ["## Latency on this machine", "",
             f"Batch {profile.batch}, {profile.threads} thread(s), {profile.runs} interleaved runs per backend "
             f"on golden inputs (the exported model's own inputs, so the densities are the model's).", ""]
    lines += _table(["backend", "init ms", "first run ms", "p50 ms", "p90 ms", "p99 ms", "items/s",
                     "p50 vs onnxruntime"], rows)
    lines += [""] + [f"- Why: {line}" for line in slower_reasons(profile)]
    for name, why in profile.skipped:
        lines.append(f"\n- skipped {name}: {why}")
    return lines + ["", "![latency per backend and per-layer time](latency.png)", ""]


def _skipped_words(e: Any, profile: Any) -> str:
    """FLOPs skipped on a device, with the reason when it is zero."""
    share = e.flops_skipped / max(e.flops, 1)
    if share > 0:
        return f"{share:.0%}"
    try:
        import device_profiles

        cross = device_profiles.load_profile(e.device).runtime.sparse_crossover
        limits = (f"crossover densities gemm {cross.gemm:g}, conv {cross.conv:g}, lowered per layer by the "
                  f"dispatcher's shape scale")
    except Exception:  # noqa: BLE001 - the wording must not fail the report
        limits = "its crossover densities"
    dens = [r.density for r in _edge_layers(profile).values() if r.density is not None and r.density < 1]
    seen = f"; the sparsest layer input measured here had density {min(dens):.2f}" if dens else ""
    return f"0%: no layer's input was sparse enough ({limits}{seen})"


def _devices_section(profile: Any) -> list[str]:
    rows = [[e.device, _f(e.latency_ms, ".1f"), _f(e.edge_runtime_ms, ".1f"), str(e.threads),
             _skipped_words(e, profile),
             "-" if e.budget_ms is None else f"{e.budget_ms:g} ms: {'meets' if e.meets_budget else 'MISSES'}"]
            for e in profile.estimates]
    low, high = PUBLISHED_ERROR_BAND
    return ["## Estimated latency on devices", "",
            f"ESTIMATES from the cost model (docs/profiling.md), not measurements. *Tuned runtime*: "
            f"{TUNED_RUNTIME} on the device's own threads, per-layer FLOPs and bytes against the profile's "
            f"throughput and bandwidth; against published MobileNetV2 and ResNet-18 latencies it was "
            f"{low:.2f}x-{high:.2f}x of the published figure. *edge_runtime*: that figure times edge_runtime's "
            f"measured time relative to onnxruntime here (never below this machine's own time scaled by "
            f"single-core speed). The budget verdict is on edge_runtime's figure. Measure on the device to "
            f"confirm.", ""] + _table(
        ["device", "tuned runtime ms", "edge_runtime ms", "threads", "FLOPs skipped", "budget"], rows) + [""]


def _files_section(seg: Any = None) -> list[str]:
    files = [("bundle/", "the deployment bundle: model.onnx, model.tflite, golden.npz, manifest.json (with the "
                         "int8 models: model.int8.onnx, model.int8.tflite and their golden outputs)"),
             ("data/test/", "test images in ImageFolder layout"),
             ("validation.json, validation.md", "full validation report"),
             ("profile.json", "every profiling figure"), ("latency.png, sparsity.png", "charts"),
             ("demo.json", "settings, timings and this summary")]
    if seg is not None:
        files[4:4] = [("segmenter/", "the segmenter's bundle (task: segmentation)"),
                      ("data/segmentation_test.npz", "its labelled test images: x and 0/1 masks"),
                      ("segmenter_validation.md, segmenter_profile.json", "its validation and profiling"),
                      ("segmentation.png", "test images with true and predicted masks")]
    return ["## Files", ""] + [f"- `{name}`: {what}" for name, what in files] + [""]


def _reproduce_section(settings: Any, seg: Any = None) -> list[str]:
    out = settings.out
    more = [f"edge-runtime validate {out}/segmenter --data {out}/data/segmentation_test.npz",
            f"edge-runtime run {out}/segmenter {out}/data/test/defect --masks masks/"] if seg is not None else []
    return ["## Reproduce", "", "```bash", f"edge-runtime validate {out}/bundle --data {out}/data/test",
            f"edge-runtime profile {out}/bundle --backend edge --backend edge-numba --backend onnxruntime "
            f"--device raspberry-pi-4", f"edge-runtime run {out}/bundle {out}/data/test/defect", *more, "```", ""]


def summary_lines(settings: Any, info: dict[str, Any], bundle: Any, validation: Any, profile: Any,
                  seg: Any = None) -> list[str]:
    """The short summary the CLI prints and report.md starts with (``seg``: the segmenter's results, if run)."""
    lines = [f"model: {settings.model} ({info.get('source')}); bundle: {bundle.path}"]
    for name, what in (("edge", "edge_runtime"), ("edge-int8", "edge_runtime, int8 model"),
                       ("litert-int8", "LiteRT, int8 TFLite model")):
        acc = next((a for a in validation.accuracy if a.backend == name), None)
        if acc:
            lines.append(f"accuracy on {settings.test_images} test images ({what}): {acc.accuracy:.1f}% "
                         f"(drop {acc.drop:+.2f} points vs {validation.reference}), defect recall "
                         f"{acc.recall.get('defect', float('nan')):.1f}%")
    lines.append(f"validation: {'PASSED' if validation.passed else 'FAILED'} for "
                 f"{', '.join(validation.backends) or 'no backend'}")
    mean = (bundle.manifest.get("sparsity") or {}).get("mean_density")
    if mean is not None:
        lines.append(f"mean input density (fraction of nonzero inputs) of annotated layers: {mean:.2f}")
    for b in profile.backends:
        twin = onnxruntime_twin(b.backend)
        ratio = (f" ({speed_words(b.ratio_p50_vs_onnxruntime, twin)})"
                 if b.ratio_p50_vs_onnxruntime and b.backend != twin else "")
        lines.append(f"latency here, {b.backend}: p50 {b.timing.p50_ms:.2f} ms{ratio}")
    edge = next((b for b in profile.backends if b.backend == "edge" and getattr(b, "engine", "")), None)
    if edge is not None:
        lines.append(f"edge ran as {' + '.join(edge.providers)}: {edge.engine}")
    for e in profile.estimates:
        edge = f", edge_runtime ~{e.edge_runtime_ms:.1f} ms" if e.edge_runtime_ms is not None else ""
        lines.append(f"estimated on {e.device}: {e.latency_ms:.1f} ms for a tuned runtime{edge}")
    if seg is not None:
        from exporters.demo.seg_report import summary_lines as seg_lines

        lines += seg_lines(seg)
    return lines


def write_report(settings: Any, info: dict[str, Any], bundle: Any, validation: Any, profile: Any,
                 timings: dict[str, float], seg: Any = None) -> Path:
    """Write ``report.md`` (and ``sparsity.png``) into ``settings.out``; returns the report's path.

    ``seg`` (:class:`exporters.demo.seg_pipeline.SegmenterResult`) adds the "Where is the defect" section.
    """
    out = Path(settings.out)
    layers = (bundle.manifest.get("sparsity") or {}).get("layers") or []
    chart = sparsity_chart(layers, _edge_layers(profile), out / "sparsity.png") if layers else None
    lines = ["# edge-runtime demo report", ""]
    lines += _summary_section(summary_lines(settings, info, bundle, validation, profile, seg))
    lines += _data_section(settings)
    lines += _model_section(info, bundle, profile, chart)
    lines += _validation_section(validation)
    lines += _latency_section(profile)
    lines += _devices_section(profile)
    if seg is not None:
        from exporters.demo.seg_report import section

        lines += section(seg)
    lines += _files_section(seg)
    lines += _reproduce_section(settings, seg)
    lines += ["Step timings (s): " + ", ".join(f"{k}: {v:.1f}" for k, v in timings.items()), ""]
    return write_text_atomic(out / "report.md", "\n".join(lines), overwrite=True)
