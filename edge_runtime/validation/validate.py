"""``validate_bundle``: check an exported bundle on this machine, before trusting it on a line.

1. the manifest's signature (docs/trust.md), its digest, every file's size and sha256
   (nothing runs when one fails; an unusable golden.npz is a BundleError, exit 2);
2. each backend on golden.npz's inputs against PyTorch's stored outputs (``atol``); the int8
   backends (bundles exported with ``quantize="int8"``) against onnxruntime's int8 outputs
   in golden.int8.npz, at the manifest's ``int8.golden_atol`` (``litert-int8`` against LiteRT's
   outputs of the int8 TFLite model in golden.int8.tflite.npz, at ``int8.tflite.golden_atol``);
3. with labelled data: accuracy per backend and its drop against a reference backend,
   agreement, logit differences, per-class recall, confusion matrix, worst samples;
4. optionally accuracy under input corruptions (noise, blur, brightness, jpeg).

Detection, segmentation and anomaly bundles (the manifest's ``task``) keep step 2 and replace
steps 3-4 with their post-processed results and task metrics:
:mod:`edge_runtime.validation.task_validate`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.bundle import LoadedBundle, check_bundle
from edge_runtime.contract import INT8_GOLDEN, INT8_TFLITE_GOLDEN
from edge_runtime.errors import EdgeRuntimeError, InvalidArgumentError
from edge_runtime.golden import Golden, load_golden
from edge_runtime.trust import TrustPolicy
from edge_runtime.validation.perturb import SEVERITIES, check_perturbations, perturb as perturb_inputs
from edge_runtime.validation.datasets import LabelledData, load_labelled
from edge_runtime.profiling.backends import is_int8
from edge_runtime.profiling.inputs import bundle_files
from edge_runtime.validation.engines import Engine, check_names, open_engines, run_batched
from edge_runtime.validation.report import AccuracyCheck, Disagreement, GoldenCheck, PerturbResult, ValidationReport
from edge_runtime.validation.task_data import load_task_data
from edge_runtime.validation.task_report import AGREEMENT, METRICS
from edge_runtime.validation.task_validate import TaskValidator

log = logging.getLogger(__name__)

DEFAULT_BACKENDS = ("edge", "edge-dense", "edge-numba", "onnxruntime", "litert")
# fp32 runtimes agree with PyTorch to ~1e-5 on small logits; 1e-3 leaves room for other
# summation orders (LiteRT, BLAS) while a changed weight moves logits by far more
DEFAULT_ATOL = 1e-3
WORST_SAMPLES = 5


def validate_bundle(bundle_dir: str | Path, *, data: str | Path | None = None,
                    backends: Sequence[str] | None = None, atol: float | None = None,
                    max_accuracy_drop: float = 1.0, perturb: Sequence[str] = (), progress: bool = True,
                    threads: int | None = None, torch_model: Any = None,
                    reference_preprocessing: dict[str, Any] | None = None,
                    trust: TrustPolicy | None = None) -> ValidationReport:
    """Validate a bundle: checksums, golden outputs, and accuracy on labelled data.

    Args:
        bundle_dir: the bundle directory.
        data: labelled data (ImageFolder directory or NPZ with x, y; for a detection, segmentation or
            anomaly bundle an NPZ as :mod:`edge_runtime.validation.task_data` says); None compares
            with golden.npz only.
        backends: backends to check (default :data:`DEFAULT_BACKENDS`, missing packages skipped);
            named explicitly, a backend that cannot run is an error. "torch" needs ``torch_model``.
        atol: largest allowed abs difference to golden.npz's outputs (default :data:`DEFAULT_ATOL`).
        max_accuracy_drop: largest allowed accuracy drop against the reference, in percentage points
            (for other tasks: of mAP@0.5, mean IoU or image AUROC).
        perturb: corruptions to measure (see :data:`edge_runtime.validation.perturb.PERTURBATIONS`);
            other tasks report their first metric (or agreement with PyTorch) under them.
        progress: show a tqdm progress bar when tqdm is installed.
        threads: intra-op threads of every backend (None: all CPUs).
        torch_model: an ``nn.Module`` or .pt2/TorchScript path; adds the ``torch`` backend, which then
            is the reference for the accuracy drop.
        reference_preprocessing: how the *reference* backend reads image folders (default: the
            manifest's). Pass the preprocessing used in training to catch a wrong manifest.
        trust: the pinned signing keys (default: from the environment and config directory;
            docs/trust.md).

    Returns:
        The :class:`ValidationReport`; ``passed`` is False on any checksum problem, an output beyond
        ``atol`` or an accuracy drop beyond ``max_accuracy_drop``.

    Raises:
        BundleError: no bundle, a bad manifest, a refused signature, or an unusable golden.npz.
        InvalidArgumentError: bad arguments or unusable data.
        BackendUnavailableError: an explicitly named backend cannot run here.
    """
    atol = DEFAULT_ATOL if atol is None else float(atol)
    if atol < 0 or max_accuracy_drop < 0:
        raise InvalidArgumentError(f"atol={atol} and max_accuracy_drop={max_accuracy_drop} must be >= 0.")
    corruptions = check_perturbations(perturb)
    names = check_names(backends or DEFAULT_BACKENDS)
    if torch_model is not None and "torch" not in names:
        names = ("torch", *names)
    path = Path(bundle_dir).expanduser()
    bundle, problems = check_bundle(path, trust=trust)
    base = dict(bundle=str(path), model=bundle.name,
                settings={"atol": atol, "max_accuracy_drop": max_accuracy_drop})
    if problems:  # never run a model that is not the exported one
        messages = tuple(p.message(path) for p in problems)
        return ValidationReport(passed=False, integrity=messages, failures=messages, **base)
    # read once more, checked as read: the references are the ones the checks authenticated; an
    # unusable golden.npz is a BundleError (exit 2), before any work
    golden = load_golden(bundle.golden_path, bundle.read_checked(bundle.golden_path))
    int8_golden = {kind: load_golden(p, bundle.read_checked(p)) for kind, p in (
        ("onnx", bundle.int8_golden_path), ("tflite", bundle.int8_tflite_golden_path)) if p}
    if backends is None:
        names = bundle_files(bundle).with_int8(names)
    engines, skipped = open_engines(bundle, names, explicit=backends is not None, threads=threads,
                                    torch_model=torch_model)
    if not engines:
        raise InvalidArgumentError(f"no backend can run here: {[f'{s.name}: {s.reason}' for s in skipped]}")
    return _Validation(bundle, golden, engines, atol, max_accuracy_drop, progress, int8_golden).run(
        base, data, corruptions, reference_preprocessing, {s.name: s.reason for s in skipped})


class _Validation:
    """One validation run: holds the engines and a progress callback."""

    def __init__(self, bundle: LoadedBundle, golden: Golden, engines: list[Engine], atol: float, max_drop: float,
                 progress: bool, int8_golden: dict[str, Golden] | None = None) -> None:
        self.bundle, self.engines, self.atol, self.max_drop = bundle, engines, atol, max_drop
        self.show_progress = progress
        self.bar: Any = None
        self.golden, self.int8_golden = golden, int8_golden or {}  # "onnx" / "tflite" -> the int8 references
        self.nonfinite: dict[str, list[str]] = {}  # backend -> images whose outputs were not finite
        self.golden_outputs: dict[str, list[NDArray[Any]] | str] = {}  # backend -> outputs on golden.npz, or error

    def run(self, base: dict[str, Any], data: str | Path | None, corruptions: Sequence[str],
            reference_pre: dict[str, Any] | None, skipped: dict[str, str]) -> ValidationReport:
        trust = self.bundle.trust
        warnings = [trust.warning] if trust is not None and trust.warning else []
        if self.bundle.spec.task != "classification":
            return self._task_report(base, data, skipped, warnings, corruptions)
        golden = self._golden()
        labelled = ref_data = None
        if data is not None:
            labelled = load_labelled(data, self.bundle.labels, self.bundle.preprocessing)
            ref_data = labelled
            if reference_pre is not None and Path(data).is_dir():
                ref_data = load_labelled(data, self.bundle.labels, reference_pre)
        self.bar = _bar(len(labelled) * len(self.engines) if labelled else 0, self.show_progress)
        try:
            accuracy, reference, ref_acc = self._accuracy(labelled, ref_data) if labelled else ((), None, None)
            basis, rows = self._perturbation(labelled, corruptions) if corruptions else (None, ())
        finally:
            if self.bar is not None:
                self.bar.close()
        if labelled is not None:
            warnings += _input_stats_warnings(labelled.x, self.golden.x)
            warnings += _nonfinite_warnings(labelled, self.nonfinite)
        failures = _golden_failures(golden)
        failures += [f"{a.backend}: accuracy {a.accuracy:.2f}% is {a.drop:.2f} points below the reference "
                     f"{reference} ({ref_acc:.2f}%), more than max_accuracy_drop {self.max_drop:g}"
                     for a in accuracy if not a.passed]
        labels = tuple(self.bundle.labels)
        defect = next((c for c in labels if c.lower() == "defect"), None)
        return ValidationReport(
            passed=not failures, backends=tuple(e.name for e in self.engines), skipped=skipped,
            golden=golden, data=labelled.source if labelled else None, labels=labels, reference=reference,
            reference_accuracy=ref_acc, accuracy=accuracy, defect_label=defect, perturb_basis=basis,
            perturbation=rows, warnings=tuple(warnings), failures=tuple(failures), **base)

    def _task_report(self, base: dict[str, Any], data: str | Path | None, skipped: dict[str, str],
                     warnings: list[str], corruptions: Sequence[str] = ()) -> ValidationReport:
        """Detection, segmentation, anomaly: post-processed agreement on golden.npz, metrics on labelled data."""
        shape = tuple(self.golden.x.shape[1:])
        validator = TaskValidator(self.bundle, shape, self.max_drop)
        labelled = None if data is None else load_task_data(data, validator.task, shape, validator.class_count())
        golden = self._golden()  # after the data is checked: a malformed file stops before any inference
        groups: dict[str | None, dict[str, Any]] = {}
        for n, o in self.golden_outputs.items():
            groups.setdefault(self._int8_kind(n), {})[n] = o
        agreement = validator.golden(self.golden.ys, groups.pop(None, {}))
        for kind, outputs in groups.items():  # held to the int8 model's own outputs, as in the golden comparison
            agreement += validator.golden(self.int8_golden[kind].ys, outputs,
                                          "onnxruntime int8" if kind == "onnx" else "LiteRT int8")
        checks, reference = (), None
        if labelled is not None:
            self.bar = _bar(len(labelled) * len(self.engines), self.show_progress)
            try:
                outputs = {e.name: self._infer(e, labelled.x) for e in self.engines}
            finally:
                if self.bar is not None:
                    self.bar.close()
            reference = _reference_name(list(outputs))
            checks, more = validator.labelled(labelled, outputs, reference)
            warnings += _input_stats_warnings(labelled.x, self.golden.x) + more
        basis, rows = self._task_perturbation(validator, labelled, corruptions) if corruptions else (None, ())
        key, name = next(iter(METRICS[validator.task].items()))
        ref_value = next((c.metrics[key] for c in checks if c.backend == reference), None)
        failures = _golden_failures(golden) + [f"{a.backend}: {a.error}" for a in agreement  # decoding failed
                                                   if a.error and not isinstance(self.golden_outputs[a.backend], str)]
        failures += [f"{c.backend}: {name} {c.metrics[key]:.2f}% is {c.drop:.2f} points below the reference "
                     f"{reference} ({ref_value:.2f}%), more than max_accuracy_drop {self.max_drop:g}"
                     for c in checks if not c.passed]
        return ValidationReport(
            passed=not failures, backends=tuple(e.name for e in self.engines), skipped=skipped, golden=golden,
            data=labelled.source if labelled else None, labels=tuple(self.bundle.labels), reference=reference,
            task=validator.task, task_golden=agreement, task_data=checks, perturb_basis=basis, perturbation=rows,
            warnings=tuple(warnings), failures=tuple(failures), **base)

    def _task_perturbation(self, validator: TaskValidator, data: Any, corruptions: Sequence[str]
                           ) -> tuple[str, tuple[PerturbResult, ...]]:
        """The task's first metric on labelled data (else agreement with PyTorch on clean golden inputs)
        under each corruption and severity, per backend (torch excluded); NaN where undefined."""
        key, name = next(iter(METRICS[validator.task].items()))
        if data is not None:
            x, basis = data.x, f"{name} (%) on the labelled data"

            def score(outputs: dict[str, Any]) -> dict[str, float]:
                checks, _ = validator.labelled(data, outputs, next(iter(outputs)))
                return {c.backend: _value(c.metrics[key]) for c in checks}
        else:
            x = self.golden.x
            basis = f"{AGREEMENT[validator.task]} (%) as PyTorch on the clean golden.npz inputs"

            def score(outputs: dict[str, Any]) -> dict[str, float]:
                return {a.backend: _value(a.agreement) for a in validator.golden(self.golden.ys, outputs)}

        return basis, self._corrupted(x, corruptions, score)

    def _infer(self, engine: Engine, x: NDArray[np.float32]) -> list[NDArray[Any]]:
        return run_batched(engine, x, progress=self.bar.update if self.bar is not None else None)

    def _int8_kind(self, backend: str) -> str | None:
        """Which int8 reference ``backend`` is held to: "onnx" (golden.int8.npz, onnxruntime's outputs),
        "tflite" (golden.int8.tflite.npz, LiteRT's), or None (golden.npz, PyTorch's)."""
        if not is_int8(backend):
            return None
        kind = "tflite" if backend.startswith("litert") else "onnx"
        return kind if kind in self.int8_golden else None

    def _reference(self, backend: str) -> tuple[Golden, float]:
        """The golden outputs and tolerance ``backend`` is checked against."""
        kind = self._int8_kind(backend)
        if kind is None:
            return self.golden, self.atol
        spec = self.bundle.spec.int8
        return self.int8_golden[kind], (spec.tflite.golden_atol if kind == "tflite" else spec.golden_atol)

    def _golden(self) -> tuple[GoldenCheck, ...]:
        checks = []
        for engine in self.engines:
            # int8 backends are held to their int8 model's own outputs, at the bundle's tolerance
            reference, atol = self._reference(engine.name)
            x, ys = reference.x, reference.ys
            try:
                outs = run_batched(engine, x)
            except EdgeRuntimeError as exc:
                checks.append(GoldenCheck(engine.name, len(x), None, None, None, atol, False,
                                          f"failed on golden inputs: {exc}"))
                self.golden_outputs[engine.name] = f"failed on golden inputs: {exc}"
                continue
            self.golden_outputs[engine.name] = outs
            checks.append(_compare_golden(engine.name, outs, ys, atol))
        return tuple(checks)

    def _accuracy(self, data: LabelledData, ref_data: LabelledData
                  ) -> tuple[tuple[AccuracyCheck, ...], str, float]:
        logits = {e.name: self._infer(e, ref_data.x if e.name == "torch" else data.x)[0] for e in self.engines}
        for name, out in logits.items():
            bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(1))
            if bad.size:
                self.nonfinite[name] = [data.names[i] for i in bad]
        reference = _reference_name(list(logits))
        ref_logits = logits[reference]
        ref_acc = _percent(ref_logits.argmax(1) == data.y)
        checks = tuple(_accuracy_check(name, out, ref_logits, data, self.bundle.labels, ref_acc, self.max_drop)
                       for name, out in logits.items())
        return checks, reference, ref_acc

    def _perturbation(self, data: LabelledData | None, corruptions: Sequence[str]
                      ) -> tuple[str, tuple[PerturbResult, ...]]:
        if data is not None:
            x, y, basis = data.x, data.y, "accuracy against the true labels"
        else:
            x, y = self.golden.x, np.asarray(self.golden.ys[0]).argmax(1)
            basis = "agreement with PyTorch's predictions on clean golden.npz inputs"
        return basis, self._corrupted(x, corruptions, lambda outputs: {
            name: _percent(outs[0].argmax(1) == y) for name, outs in outputs.items()})

    def _corrupted(self, x: NDArray[np.float32], corruptions: Sequence[str],
                   score: Callable[[dict[str, list[NDArray[Any]]]], dict[str, float]]) -> tuple[PerturbResult, ...]:
        """``score`` of every backend but torch on clean ``x``, then under each corruption and severity."""
        engines = [e for e in self.engines if e.name != "torch"]

        def run(inputs: NDArray[np.float32]) -> dict[str, float]:
            return score({e.name: run_batched(e, inputs) for e in engines})

        rows = [PerturbResult("none", 0, run(x))]
        for name in corruptions:
            for severity in SEVERITIES:
                rows.append(PerturbResult(name, severity,
                                          run(perturb_inputs(x, self.bundle.preprocessing, name, severity))))
        return tuple(rows)


def _value(v: float | None) -> float:
    """A metric for the corruption table: NaN where it is undefined on the data."""
    return float("nan") if v is None else float(v)


def _bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="validate", unit="sample", leave=False)


def _percent(hits: NDArray[np.bool_]) -> float:
    return float(100.0 * np.mean(hits)) if hits.size else 0.0


def _reference_name(names: list[str]) -> str:
    """torch if present, else the first of onnxruntime / edge-dense, else the first backend."""
    return next((n for n in ("torch", "onnxruntime", "edge-dense") if n in names), names[0])


def _golden_failures(golden: Sequence[GoldenCheck]) -> list[str]:
    def file(g: GoldenCheck) -> str:
        if not is_int8(g.backend):
            return "golden.npz"
        return INT8_TFLITE_GOLDEN if g.backend.startswith("litert") else INT8_GOLDEN
    return [f"{g.backend}: {g.error or f'max abs diff {g.max_abs:.3g} to {file(g)} > atol {g.atol:g}'}"
            for g in golden if not g.passed]


def _compare_golden(name: str, outs: Sequence[NDArray[Any]], ys: Sequence[NDArray[Any]], atol: float) -> GoldenCheck:
    diffs = []
    for i, (out, ref) in enumerate(zip(outs, ys)):
        out = np.asarray(out, np.float64)
        if out.shape != ref.shape:
            return GoldenCheck(name, len(ref), None, None, None, atol, False,
                               f"output {i} has shape {out.shape}, golden.npz has {ref.shape}")
        diffs.append(np.abs(out - ref).ravel())
    diff = np.concatenate(diffs) if diffs else np.zeros(1)
    first, ref0 = np.asarray(outs[0]), ys[0]
    agreement = _percent(first.argmax(1) == ref0.argmax(1)) if ref0.ndim == 2 else None
    max_abs = float(diff.max()) if diff.size else 0.0
    ok = bool(np.isfinite(diff).all()) and max_abs <= atol
    return GoldenCheck(name, len(ref0), max_abs, float(diff.mean()), agreement, atol, ok)


def _accuracy_check(name: str, logits: NDArray[Any], ref_logits: NDArray[Any], data: LabelledData,
                    labels: Sequence[str], ref_acc: float, max_drop: float) -> AccuracyCheck:
    classes = max(len(labels), int(logits.shape[1]))
    names = list(labels) + [str(i) for i in range(len(labels), classes)]
    # fail closed: an image whose outputs are not all finite (NaN/inf) is never a class
    finite = np.isfinite(logits).all(1)
    pred = np.where(finite, logits.argmax(1), -1)
    ref_pred = np.where(np.isfinite(ref_logits).all(1), ref_logits.argmax(1), -1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (data.y[finite], pred[finite]), 1)
    per_class = np.bincount(data.y, minlength=classes)
    recall = {names[c]: float(100.0 * confusion[c, c] / per_class[c]) for c in range(classes) if per_class[c]}
    diff = np.abs(logits.astype(np.float64) - ref_logits).max(1)
    order = np.lexsort((-diff, pred == ref_pred))  # disagreements first, then largest logit gap
    label = lambda k: names[k] if k >= 0 else "non-finite output"  # noqa: E731
    worst = tuple(Disagreement(data.names[i], names[data.y[i]], label(pred[i]), label(ref_pred[i]),
                               float(diff[i])) for i in order[:WORST_SAMPLES] if not diff[i] <= 0)
    accuracy = _percent(pred == data.y)
    return AccuracyCheck(name, accuracy, ref_acc - accuracy, _percent(pred == ref_pred), float(diff.max()),
                         float(np.abs(logits - ref_logits).mean()), recall, confusion.tolist(), worst,
                         ref_acc - accuracy <= max_drop + 1e-9)


def _nonfinite_warnings(data: LabelledData, outputs: dict[str, list[str]]) -> list[str]:
    """One warning per backend with NaN/inf outputs, and one for NaN/inf inputs (a broken frame)."""
    rows = data.x.reshape(len(data.x), -1)
    bad_in = [data.names[i] for i in np.flatnonzero(~np.isfinite(rows).all(1))]
    out = [f"{len(bad_in)} image(s) have non-finite (NaN/inf) values after preprocessing, e.g. "
           f"{bad_in[:3]}: broken frames; they are counted as wrong, never as a class."] if bad_in else []
    out += [f"{name}: {len(names)} image(s) gave non-finite (NaN/inf) outputs, e.g. {names[:3]}; counted as "
            f"wrong, never as a class." for name, names in outputs.items()]
    return out


def _input_stats_warnings(x: NDArray[np.float32], gx: NDArray[np.float32]) -> list[str]:
    """Warn when the data, preprocessed per the manifest, looks unlike golden.npz's inputs.

    golden.npz holds inputs as PyTorch saw them at export; a per-channel mean far from theirs
    (over half their spread) hints at a wrong mean/std/value_range/channel order in the manifest.
    """
    if gx.ndim != 4 or x.ndim != 4 or gx.shape[1:] != x.shape[1:]:
        return []
    axis = 1 if gx.shape[1] <= 4 else 3  # channels first for NCHW (C <= 4), else last
    reduce = tuple(a for a in range(4) if a != axis)
    g_mean, g_std, d_mean = gx.mean(reduce), gx.std(reduce) + 1e-6, x.mean(reduce)
    off = np.abs(d_mean - g_mean) / g_std
    if float(off.max()) <= 0.5:
        return []
    return [f"the data preprocessed per the manifest has per-channel means {[round(float(v), 3) for v in d_mean]} "
            f"but golden.npz's inputs (as PyTorch saw them) have {[round(float(v), 3) for v in g_mean]}; check the "
            f"manifest's mean/std/value_range/channel_order (or the data is unlike the calibration set)."]
