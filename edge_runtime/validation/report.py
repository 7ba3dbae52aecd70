"""The validation report: dataclasses, JSON and Markdown forms, a short text summary, atomic writes.

A detection, segmentation or anomaly bundle's report adds the sections of
:mod:`edge_runtime.validation.task_report`; a classifier's is unchanged (its JSON has no task keys).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.outputs import write_atomic
from edge_runtime.profiling.backends import is_int8
from edge_runtime.validation.task_report import TaskAgreement, TaskCheck, markdown_lines, text_lines


@dataclass(frozen=True)
class GoldenCheck:
    """One backend's outputs on golden.npz's inputs against PyTorch's outputs stored there.

    An int8 backend is compared with onnxruntime's int8 outputs (golden.int8.npz) instead, ``litert-int8``
    with LiteRT's outputs of the int8 TFLite model (golden.int8.tflite.npz).
    """

    backend: str
    samples: int
    max_abs: float | None
    mean_abs: float | None
    agreement: float | None  # % same top-1 as PyTorch (2-D outputs only)
    atol: float
    passed: bool
    error: str | None = None  # the backend failed to run


@dataclass(frozen=True)
class Disagreement:
    """A sample on which a backend and the reference disagree (most first)."""

    sample: str
    label: str
    prediction: str
    reference_prediction: str
    max_abs: float


@dataclass(frozen=True)
class AccuracyCheck:
    """One backend on labelled data, compared with the reference backend."""

    backend: str
    accuracy: float  # percent
    drop: float  # reference accuracy - accuracy, percentage points
    agreement: float  # % same top-1 as the reference
    max_abs: float  # logits vs the reference
    mean_abs: float
    recall: dict[str, float]  # per class, percent (None-free: classes without samples omitted)
    confusion: list[list[int]]  # [true][predicted]
    worst: tuple[Disagreement, ...]
    passed: bool


@dataclass(frozen=True)
class PerturbResult:
    """Accuracy (percent) of each backend under one corruption at one severity (0 = clean)."""

    perturbation: str
    severity: int
    accuracy: dict[str, float]


@dataclass(frozen=True)
class ValidationReport:
    """Everything ``validate_bundle`` found; ``passed`` is the exit status's basis.

    Example:
        >>> r = ValidationReport(bundle="b", model="m", passed=False, integrity=("model.onnx ...",))
        >>> r.to_dict()["passed"]
        False
    """

    bundle: str
    model: str
    passed: bool
    integrity: tuple[str, ...] = ()  # checksum problems; nothing ran when non-empty
    backends: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> reason
    golden: tuple[GoldenCheck, ...] = ()
    data: str | None = None
    labels: tuple[str, ...] = ()
    reference: str | None = None
    reference_accuracy: float | None = None
    accuracy: tuple[AccuracyCheck, ...] = ()
    defect_label: str | None = None
    perturb_basis: str | None = None
    perturbation: tuple[PerturbResult, ...] = ()
    warnings: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    task_golden: tuple[TaskAgreement, ...] = ()  # other tasks: post-processed results vs PyTorch's (golden.npz)
    task_data: tuple[TaskCheck, ...] = ()        # other tasks: metrics on labelled data, per backend

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (a classifier's without the task keys, as before tasks existed)."""
        doc = asdict(self)
        if self.task == "classification":
            for key in ("task", "task_golden", "task_data"):
                doc.pop(key)
        return doc


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def render_text(report: ValidationReport) -> str:
    """A few lines for the terminal: verdict, per-backend figures, failures."""
    lines = [f"{report.bundle}: {'PASSED' if report.passed else 'FAILED'}"]
    lines += [f"  integrity: {p}" for p in report.integrity]
    for g in report.golden:
        state = "ok" if g.passed else "FAIL"
        detail = g.error or f"max|diff| {_f(g.max_abs, '.2e')} (atol {g.atol:g}), top-1 agreement {_f(g.agreement, '.1f')}%"
        lines.append(f"  golden {g.backend:<16} {state:4} {detail}")
    if report.task != "classification":
        lines += text_lines(report)
    for a in report.accuracy:
        defect = (f", recall[{report.defect_label}] {_f(a.recall.get(report.defect_label), '.1f')}%"
                  if report.defect_label else "")
        lines.append(f"  data   {a.backend:<16} {'ok' if a.passed else 'FAIL':4} accuracy {a.accuracy:.2f}% "
                     f"(drop {a.drop:+.2f} pts vs {report.reference}), agreement {a.agreement:.1f}%{defect}")
    lines += [f"  skipped {name}: {reason}" for name, reason in report.skipped.items()]
    lines += [f"  warning: {w}" for w in report.warnings]
    lines += [f"  failure: {f}" for f in report.failures if f not in report.integrity]
    return "\n".join(lines)


def render_markdown(report: ValidationReport) -> str:
    """The Markdown report: verdict, integrity, golden table, accuracy, recall, confusion, perturbation."""
    out = [f"# Validation of `{report.model}`", "",
           f"- bundle: `{report.bundle}`", f"- result: **{'PASSED' if report.passed else 'FAILED'}**",
           f"- settings: {', '.join(f'{k}={v}' for k, v in report.settings.items())}"]
    if report.data:
        out.append(f"- data: {report.data}; reference backend: `{report.reference}`")
    out += [f"- failure: {f}" for f in report.failures]
    out += [f"- warning: {w}" for w in report.warnings]
    out += [f"- skipped `{n}`: {r}" for n, r in report.skipped.items()]
    if report.integrity:
        out += ["", "## Integrity (sha256)", ""] + [f"- {p}" for p in report.integrity]
    if report.golden:
        int8 = {g.backend.startswith("litert") for g in report.golden if is_int8(g.backend)}
        out += ["", "## Against PyTorch's outputs (golden.npz)" + (
                    "; int8 backends against onnxruntime's int8 outputs (golden.int8.npz)" if False in int8 else "") + (
                    "; litert-int8 against LiteRT's outputs of model.int8.tflite (golden.int8.tflite.npz)"
                    if True in int8 else ""), "",
                "| backend | samples | max abs diff | mean abs diff | top-1 agreement % | result |",
                "|---|---|---|---|---|---|"]
        out += [f"| {g.backend} | {g.samples} | {_f(g.max_abs, '.2e')} | {_f(g.mean_abs, '.2e')} | "
                f"{_f(g.agreement, '.1f')} | {'ok' if g.passed else 'FAIL: ' + (g.error or f'> atol {g.atol:g}')} |"
                for g in report.golden]
    if report.task != "classification":
        out += markdown_lines(report)
    if report.accuracy:
        out += _accuracy_markdown(report)
    if report.perturbation:
        out += _perturb_markdown(report)
    return "\n".join(out) + "\n"


def _accuracy_markdown(report: ValidationReport) -> list[str]:
    labels = list(report.labels)
    out = ["", "## Accuracy on labelled data", "",
           "| backend | accuracy % | drop (pts) | agreement % | max abs logit diff | mean abs logit diff | result |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {a.backend} | {a.accuracy:.2f} | {a.drop:+.2f} | {a.agreement:.1f} | {a.max_abs:.2e} | "
            f"{a.mean_abs:.2e} | {'ok' if a.passed else 'FAIL'} |" for a in report.accuracy]
    out += ["", "### Recall per class (%)" + (f" — `{report.defect_label}` matters most" if report.defect_label else ""),
            "", "| backend | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    out += [f"| {a.backend} | " + " | ".join(_f(a.recall.get(c), ".1f") for c in labels) + " |"
            for a in report.accuracy]
    for a in report.accuracy:
        out += ["", f"### `{a.backend}`: confusion matrix (rows: true, columns: predicted)", "",
                "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        out += [f"| {labels[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(a.confusion)]
        if a.worst:
            out += ["", f"Samples where `{a.backend}` disagrees most with `{report.reference}`:", "",
                    "| sample | label | prediction | reference | max abs logit diff |", "|---|---|---|---|---|"]
            out += [f"| {d.sample} | {d.label} | {d.prediction} | {d.reference_prediction} | {d.max_abs:.2e} |"
                    for d in a.worst]
    return out


def _perturb_markdown(report: ValidationReport) -> list[str]:
    names = list(report.perturbation[0].accuracy)
    what = "Accuracy (%)" if report.task == "classification" else "Results"
    out = ["", f"## {what} under input corruptions ({report.perturb_basis})", "",
           "| corruption | severity | " + " | ".join(names) + " |", "|---|---" + "|---" * len(names) + "|"]
    out += [f"| {p.perturbation} | {p.severity or '-'} | " + " | ".join(f"{p.accuracy[n]:.1f}" for n in names) + " |"
            for p in report.perturbation]
    return out


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`edge_runtime.outputs.write_atomic`).

    Raises:
        InvalidArgumentError: ``path`` exists and ``overwrite`` is False.
    """
    return write_atomic(path, text, overwrite=overwrite)


def write_json(report: ValidationReport, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the report as JSON (atomically)."""
    return write_text_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n", overwrite=overwrite)


def write_markdown(report: ValidationReport, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the report as Markdown (atomically)."""
    return write_text_atomic(path, render_markdown(report), overwrite=overwrite)
