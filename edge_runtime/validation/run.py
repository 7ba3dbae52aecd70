"""Run a bundle on image files on the device: label, score and latency per image; a watch-folder loop.

Images are decoded and preprocessed exactly as the manifest says
(:mod:`edge_runtime.preprocessing`) and run with :class:`edge_runtime.InferenceSession`.
A file that cannot be used yields a :class:`Result` with ``error`` set; the others still run.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.bundle import load_bundle
from edge_runtime.errors import InvalidArgumentError
from edge_runtime.preprocessing import IMAGE_SUFFIXES, ImageError, Preprocessing, list_images, load_image
from edge_runtime.trust import TrustPolicy
from edge_runtime.validation.report import write_text_atomic

log = logging.getLogger(__name__)

MIN_POLL, MAX_POLL = 0.05, 10.0  # seconds; the watch loop's interval is clamped to this range


@dataclass(frozen=True)
class Result:
    """One image's outcome: the top class, its softmax probability and the latency, or an error."""

    path: str
    label: str | None = None
    index: int | None = None
    score: float | None = None
    latency_ms: float | None = None  # the batch's inference time / images in the batch
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image was classified."""
        return self.error is None


class BundleRunner:
    """A bundle opened for inference on images.

    Args:
        bundle_dir: the bundle (its sha256s are verified first).
        threads: intra-op threads (None: the device profile's or all CPUs).
        device: a device profile name or path (sets threads and dense/sparse crossovers).
        sparsity: "auto", "off" or "force" (see :class:`edge_runtime.InferenceSession`).
        exact_size: refuse images that are not the model's input size instead of resizing them.
        trust: pinned signing keys (default: environment and config directory; docs/trust.md).

    Raises:
        BundleError: a bad manifest, a refused signature or a file failing its checksum.
        InvalidArgumentError: no preprocessing in the manifest, or bad options.

    Example:
        >>> runner = BundleRunner("out/bundle")  # doctest: +SKIP
        >>> [r.label for r in runner.run_files(["a.png", "b.png"])]  # doctest: +SKIP
        ['ok', 'defect']
    """

    def __init__(self, bundle_dir: str | Path, *, threads: int | None = None, device: str | None = None,
                 sparsity: str = "auto", exact_size: bool = False, trust: TrustPolicy | None = None) -> None:
        import edge_runtime

        self.bundle = load_bundle(bundle_dir, trust=trust)
        if self.bundle.preprocessing is None:
            raise InvalidArgumentError(f"bundle {str(self.bundle.path)!r} has no preprocessing in its manifest, "
                                       f"so images cannot be turned into inputs; re-export with preprocessing=...")
        self.pre: Preprocessing = self.bundle.spec.preprocessing  # checked and bounded by the contract
        self.exact_size = exact_size
        opts = edge_runtime.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        self.session = edge_runtime.InferenceSession(str(self.bundle.require_onnx()), opts, profile=device,
                                                     sparsity=sparsity)
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_batch = (self.session.get_inputs()[0].shape or [None])[0]
        self.labels = self.bundle.labels
        self._warm: set[tuple[int, ...]] = set()

    def run_files(self, paths: Sequence[str | Path], batch: int = 1) -> list[Result]:
        """Classify image files in batches of ``batch``; unusable files get an error Result.

        Raises:
            InvalidArgumentError: ``batch`` < 1, or a batch size the model's fixed batch axis rejects.
        """
        if not isinstance(batch, int) or batch < 1:
            raise InvalidArgumentError(f"batch={batch!r}; expected an integer >= 1.")
        if isinstance(self.fixed_batch, int) and self.fixed_batch != batch:
            raise InvalidArgumentError(f"the model's input has a fixed batch of {self.fixed_batch}; use "
                                       f"--batch {self.fixed_batch}.")
        results: dict[str, Result] = {}
        pending: list[tuple[str, NDArray[np.float32]]] = []
        for path in paths:
            try:
                pending.append((str(path), load_image(path, self.pre, exact_size=self.exact_size)))
            except ImageError as exc:
                log.debug("skipping %s: %s", path, exc)
                results[str(path)] = Result(str(path), error=str(exc))
            if len(pending) == batch:
                results.update((r.path, r) for r in self._infer(pending))
                pending = []
        if pending:
            results.update((r.path, r) for r in self._infer(pending))
        return [results[str(p)] for p in paths]

    def _infer(self, items: list[tuple[str, NDArray[np.float32]]]) -> list[Result]:
        x = np.stack([arr for _, arr in items])
        if x.shape not in self._warm:  # first call per shape compiles kernels: keep it out of latencies
            self.session.run(None, {self.input_name: x})
            self._warm.add(x.shape)
        start = time.perf_counter()
        logits = np.asarray(self.session.run(None, {self.input_name: x})[0], np.float64)
        per_image = (time.perf_counter() - start) * 1000.0 / len(items)
        if logits.ndim != 2:
            raise InvalidArgumentError(f"'run' reports a class per image, but the model's first output has "
                                       f"shape {logits.shape}; expected (batch, classes).")
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        top = probs.argmax(1)
        return [Result(path, self._label(int(k)), int(k), float(probs[i, k]), per_image)
                for i, ((path, _), k) in enumerate(zip(items, top))]

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def run_bundle(bundle_dir: str | Path, inputs: Iterable[str | Path], *, batch: int = 1, threads: int | None = None,
               device: str | None = None, sparsity: str = "auto", exact_size: bool = False) -> list[Result]:
    """Classify image files and directories of images with a bundle.

    Args:
        bundle_dir: the bundle directory.
        inputs: image files and/or directories (searched recursively for image suffixes).
        batch: images per inference call.
        threads: intra-op threads.
        device: a device profile name or path.
        sparsity: "auto", "off" or "force".
        exact_size: refuse wrongly sized images instead of resizing them.

    Returns:
        One :class:`Result` per image, in input order; failed images have ``error`` set.

    Raises:
        BundleError: bad manifest or checksum (before any image is read).
        InvalidArgumentError: an input path that does not exist, or bad options.
    """
    runner = BundleRunner(bundle_dir, threads=threads, device=device, sparsity=sparsity, exact_size=exact_size)
    return runner.run_files(list_images(inputs), batch)


def watch(directory: str | Path, runner: BundleRunner, *, batch: int = 1, poll_interval: float = 0.5,
          max_files: int | None = None, timeout: float | None = None, include_existing: bool = False,
          on_result: Callable[[Result], None] | None = None, stop: threading.Event | None = None) -> list[Result]:
    """Process image files as they appear in ``directory`` until stopped.

    A file is read once its size stopped changing between two polls (so half-written files
    are not decoded). Ctrl-C (KeyboardInterrupt) ends the loop cleanly.

    Args:
        directory: the folder to watch (recursively).
        runner: the opened bundle.
        batch: images per inference call (new files found in one poll are batched).
        poll_interval: seconds between scans, clamped to [0.05, 10].
        max_files: stop after this many files (None: no limit).
        timeout: stop after this many seconds (None: no limit).
        include_existing: also process files present at start.
        on_result: called with each Result as soon as it exists.
        stop: an Event that ends the loop when set.

    Returns:
        The Results, in processing order.

    Raises:
        InvalidArgumentError: ``directory`` is not a directory.
    """
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise InvalidArgumentError(f"--watch {str(folder)!r} is not a directory; pass an existing folder.")
    interval = min(max(float(poll_interval), MIN_POLL), MAX_POLL)
    seen: set[Path] = set() if include_existing else set(_scan(folder))
    sizes: dict[Path, int] = {}
    results: list[Result] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not _done(results, max_files, deadline, stop):
            ready = _ready_files(folder, seen, sizes)
            if max_files is not None:
                ready = ready[:max_files - len(results)]
            for result in runner.run_files(ready, batch) if ready else []:
                seen.add(Path(result.path))
                results.append(result)
                if on_result is not None:
                    on_result(result)
            if not _done(results, max_files, deadline, stop):
                (stop or threading.Event()).wait(interval)
    except KeyboardInterrupt:
        log.info("watch: interrupted after %d file(s)", len(results))
    return results


def _done(results: list[Result], max_files: int | None, deadline: float | None,
          stop: threading.Event | None) -> bool:
    return ((max_files is not None and len(results) >= max_files)
            or (deadline is not None and time.monotonic() >= deadline) or (stop is not None and stop.is_set()))


def _scan(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _ready_files(folder: Path, seen: set[Path], sizes: dict[Path, int]) -> list[Path]:
    """New files whose size is the same as at the previous poll (fully written)."""
    ready = []
    for path in _scan(folder):
        if path in seen:
            continue
        try:
            size = path.stat().st_size
        except OSError:  # deleted between scan and stat
            continue
        if size > 0 and sizes.get(path) == size:
            ready.append(path)
            sizes.pop(path, None)
        else:
            sizes[path] = size
    return ready


def format_results(results: Sequence[Result], fmt: str) -> str:
    """Results as CSV (``fmt="csv"``) or JSON (``"json"``) text."""
    rows = [asdict(r) for r in results]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "label", "index", "score", "latency_ms", "error"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_results(results: Sequence[Result], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write results atomically as .csv or .json (by suffix).

    Raises:
        InvalidArgumentError: another suffix, or an existing file without ``overwrite``.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InvalidArgumentError(f"--out {str(path)!r}: expected a .csv or .json file name.")
    return write_text_atomic(path, format_results(results, suffix[1:]), overwrite=overwrite)


def summary_line(result: Result) -> str:
    """One printable line per image (the CLI prints it)."""
    if result.error:
        return f"error: {result.error}"
    return f"{result.path}\t{result.label}\t{result.score:.4f}\t{result.latency_ms:.2f} ms"

