"""The report's "Where is the defect" section and summary lines for the demo's segmenter."""
from __future__ import annotations

from typing import Any

from edge_runtime.profiling.backends import onnxruntime_twin
from edge_runtime.profiling.report import speed_words
from exporters.demo.seg_pipeline import MIN_AGREEMENT

SECTION = "Where is the defect"


def _pct(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(100.0 * value, spec)


def _f(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _edge_check(seg: Any) -> Any:
    return next((c for c in seg.validation.task_data if c.backend == "edge"), None)


def _validation_table(seg: Any) -> list[str]:
    rows = []
    for c in seg.validation.task_data:
        per = c.per_class
        rows.append(f"| {c.backend} | {_f(c.metrics.get('miou'))} | {_f(per.get('background', {}).get('IoU'))} | "
                    f"{_f(per.get('defect', {}).get('IoU'))} | {_f(per.get('background', {}).get('Dice'))} | "
                    f"{_f(per.get('defect', {}).get('Dice'))} | {_f(c.agreement, '.2f')} | "
                    f"{'yes' if c.passed else 'NO'} |")
    return ["| backend | mean IoU % | background IoU % | defect IoU % | background Dice % | defect Dice % | "
            f"same pixels as {seg.validation.reference} % | passed |", "|---|---|---|---|---|---|---|---|", *rows]


def _latency_lines(seg: Any) -> list[str]:
    lines = []
    for b in seg.profile.backends:
        twin = onnxruntime_twin(b.backend)
        words = (f" ({speed_words(b.ratio_p50_vs_onnxruntime, twin)})"
                 if b.ratio_p50_vs_onnxruntime and b.backend != twin else "")
        engine = f"; ran as {b.engine}" if getattr(b, "engine", "") else ""
        lines.append(f"- {b.backend}: p50 {b.timing.p50_ms:.2f} ms, p90 {b.timing.p90_ms:.2f} ms{words}{engine}")
    return lines


def section(seg: Any) -> list[str]:
    """Markdown lines of the section (title included)."""
    metrics = seg.info.get("metrics") or {}
    s = seg.scores
    sparsity = seg.bundle.manifest.get("sparsity") or {}
    lines = [f"## {SECTION}", "",
             "A second shipped model marks the defect's pixels: a three-level ReLU U-Net (8-16-32 channels, "
             "exporters/demo/models.py `InspectionUNet`) trained on the masks the data generator draws with each "
             "defect. It is exported as `segmenter/` with `task: segmentation` (classes background, defect; "
             "docs/tasks.md), so `edge-runtime run segmenter IMAGES --masks DIR` writes mask PNGs and defect areas.",
             "", f"At training time, on the whole test split ({metrics.get('n_test', '-')} images): defect IoU "
             f"{_pct((metrics.get('iou') or {}).get('defect'))}%, pixel recall {_pct(metrics.get('pixel_recall'))}%, "
             f"defect recall {_pct(metrics.get('image_recall'))}%, false alarms on good images "
             f"{_pct(metrics.get('false_alarms'))}%.", "",
             f"Validated here on {seg.images} test images ({s['defect_images']} with a defect; "
             f"`data/segmentation_test.npz`) with PyTorch as the reference "
             f"(**{'PASSED' if seg.passed else 'FAILED'}**: no mean-IoU drop beyond the validation's limit and "
             f"every backend's mask the same as PyTorch's on >= {MIN_AGREEMENT:g}% of the pixels; details in "
             f"`segmenter_validation.md`):", ""]
    lines += _validation_table(seg)
    lines += ["", f"edge_runtime's masks on these images: defect recall **{_pct(s['image_recall'])}%** "
              f"({s['defect_images']} defect images), pixel recall {_pct(s['pixel_recall'])}%, pixel precision "
              f"{_pct(s['pixel_precision'])}%, false alarms {_pct(s['false_alarms'])}% of {s['good_images']} "
              f"good images.", "",
              "*Defect recall*: defect images whose predicted mask overlaps the true defect by at least one pixel. "
              "*Pixel recall*: true defect pixels predicted as defect. *False alarm*: a good image with any "
              "predicted defect pixel. IoU = overlap / union of predicted and true pixels of a class; "
              "Dice = 2 x overlap / (predicted + true).", ""]
    per_type = s.get("per_type") or {}
    if per_type:
        lines += ["| defect type | images | defect IoU % | pixel recall % |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['images']} | {_pct(v['iou'])} | {_pct(v['pixel_recall'])} |"
                  for k, v in per_type.items()]
        lines.append("")
    golden = next((a for a in seg.validation.task_golden if a.backend == "edge"), None)
    if golden is not None:
        lines += [f"Agreement with PyTorch on the bundle's golden inputs: {_f(golden.agreement, '.2f')}% of pixels "
                  f"({golden.samples} images).", ""]
    lines += [f"Latency here ({seg.profile.threads} thread(s), {seg.profile.runs} runs, one 64x64 image):", ""]
    lines += _latency_lines(seg)
    lines += ["", f"Sparsity: mean input density (fraction of nonzeros) of the annotated layers "
              f"{_f(sparsity.get('mean_density'), '.3f')} at calibration (the first conv sees the image, density 1);"
              f" {_f(metrics.get('mean_density'), '.3f')} over the ReLU-fed layers at training time (FATReLU "
              f"thresholds calibrated to sparsity {_f(metrics.get('fatrelu_target'), 'g')}).", ""]
    if seg.figure is not None:
        lines += [f"![test images, true and predicted defect masks]({seg.figure.name})", ""]
    return lines


def summary_lines(seg: Any) -> list[str]:
    """Two or three lines for the demo's summary."""
    s, edge = seg.scores, _edge_check(seg)
    per = edge.per_class if edge is not None else {}
    lines = [f"segmenter ({seg.images} test images, edge_runtime): defect IoU "
             f"{_f(per.get('defect', {}).get('IoU'))}%, defect recall {_pct(s['image_recall'])}% of defect images "
             f"(pixel recall {_pct(s['pixel_recall'])}%), same pixels as PyTorch "
             f"{_f(edge.agreement if edge else None, '.2f')}%; validation "
             f"{'PASSED' if seg.passed else 'FAILED'}"]
    ratio = next((b for b in seg.profile.backends if b.backend == "edge"), None)
    if ratio is not None and ratio.ratio_p50_vs_onnxruntime:
        lines.append(f"segmenter latency here, edge: p50 {ratio.timing.p50_ms:.2f} ms "
                     f"({speed_words(ratio.ratio_p50_vs_onnxruntime, 'onnxruntime')})")
    return lines
