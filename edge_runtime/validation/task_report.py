"""The per-task parts of the validation report: dataclasses and their text and Markdown lines.

A detection, segmentation or anomaly bundle's report holds, per backend, how far its
post-processed results agree with PyTorch's on golden.npz (:class:`TaskAgreement`) and, with
labelled data, the task's metrics and their drop against the reference backend
(:class:`TaskCheck`). Metrics are percentages, like a classifier's accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Metric key -> display name, per task, in report order; the first is the one whose drop is checked.
METRICS = {
    "detection": {"map50": "mAP@0.5", "recall": "recall at threshold"},
    "segmentation": {"miou": "mean IoU", "mdice": "mean Dice", "pixel_accuracy": "pixel accuracy"},
    "anomaly": {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "fpr": "FPR on good",
                "recall": "defect recall"},
}
#: What "agreement" counts, per task.
AGREEMENT = {"detection": "same boxes", "segmentation": "same pixels", "anomaly": "same decisions"}


@dataclass(frozen=True)
class TaskAgreement:
    """One backend's post-processed results on golden.npz against PyTorch's outputs decoded the same way.

    An int8 backend is compared with onnxruntime's int8 outputs (golden.int8.npz) instead.
    """

    backend: str
    samples: int
    agreement: float | None           # % same boxes / pixels / decisions (AGREEMENT)
    max_score_diff: float | None = None  # anomaly: largest |normalised score difference|
    error: str | None = None          # the backend failed to run or its outputs did not fit the postprocess
    reference: str = "PyTorch"        # whose outputs (golden.npz), or "onnxruntime int8" (golden.int8.npz)


@dataclass(frozen=True)
class TaskCheck:
    """One backend on labelled data: the task's metrics (percent) and agreement with the reference backend."""

    backend: str
    metrics: dict[str, float | None]               # METRICS[task] keys; None: undefined on this data
    per_class: dict[str, dict[str, float | None]]  # class -> {"AP"} (detection) / {"IoU", "Dice"} (segmentation)
    agreement: float | None                        # % same boxes / pixels / decisions as the reference
    max_score_diff: float | None                   # anomaly: largest |normalised score difference|
    drop: float | None                             # reference's first metric - this one's, percentage points
    passed: bool


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _figures(task: str, check: TaskCheck | TaskAgreement) -> str:
    text = f"{AGREEMENT[task]} {_f(check.agreement, '.1f')}%"
    return text + (f", max score diff {check.max_score_diff:.2e}" if check.max_score_diff is not None else "")


def text_lines(report: Any) -> list[str]:
    """Terminal lines: agreement on golden.npz, then each backend's metrics on labelled data."""
    task, names = report.task, METRICS[report.task]
    lines = []
    for a in report.task_golden:
        state = "ok" if a.error is None else "FAIL"
        lines.append(f"  task   {a.backend:<16} {state:4} {a.error or _figures(task, a) + ' vs ' + a.reference}")
    first = next(iter(names))
    for c in report.task_data:
        rest = ", ".join(f"{names[k]} {_f(v, '.1f')}%" for k, v in c.metrics.items() if k != first)
        lines.append(f"  data   {c.backend:<16} {'ok' if c.passed else 'FAIL':4} {names[first]} "
                     f"{_f(c.metrics.get(first))}% (drop {_f(c.drop, '+.2f')} pts vs {report.reference}), {rest}, "
                     f"{_figures(task, c)}")
    return lines


def markdown_lines(report: Any) -> list[str]:
    """Markdown sections: agreement with PyTorch on golden.npz, metrics, per-class table."""
    task, names = report.task, METRICS[report.task]
    out: list[str] = []
    if report.task_golden:
        out += ["", f"## {task.capitalize()} results against the golden outputs (post-processed)", "",
                f"| backend | against | samples | {AGREEMENT[task]} % | max score diff | result |",
                "|---|---|---|---|---|---|"]
        out += [f"| {a.backend} | {a.reference} | {a.samples} | {_f(a.agreement, '.1f')} | "
                f"{_f(a.max_score_diff, '.2e')} | {'ok' if a.error is None else 'FAIL: ' + a.error} |"
                for a in report.task_golden]
    if not report.task_data:
        return out
    out += ["", f"## {task.capitalize()} metrics on labelled data (%)", "",
            "| backend | " + " | ".join(names.values()) + f" | drop (pts) | {AGREEMENT[task]} % | max score diff "
            f"| result |", "|---" * (len(names) + 5) + "|"]
    out += [f"| {c.backend} | " + " | ".join(_f(c.metrics.get(k)) for k in names) + f" | {_f(c.drop, '+.2f')} | "
            f"{_f(c.agreement, '.1f')} | {_f(c.max_score_diff, '.2e')} | {'ok' if c.passed else 'FAIL'} |"
            for c in report.task_data]
    classes = list(dict.fromkeys(k for c in report.task_data for k in c.per_class))
    columns = list(dict.fromkeys(m for c in report.task_data for v in c.per_class.values() for m in v))
    if classes and columns:
        out += ["", "### Per class (%)", "", "| backend | " + " | ".join(f"{k} {m}" for k in classes for m in columns)
                + " |", "|---" * (len(classes) * len(columns) + 1) + "|"]
        out += [f"| {c.backend} | " + " | ".join(_f(c.per_class.get(k, {}).get(m)) for k in classes for m in columns)
                + " |" for c in report.task_data]
    return out
