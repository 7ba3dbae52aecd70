"""Run a bundle on image files on the device: per image, its task's result and the latency.

A classifier gives a label and score per image; a detector, segmenter or anomaly detector
(the manifest's ``task``) gives boxes, a mask's defect area or an anomaly score and decision,
post-processed by :mod:`edge_runtime.validation.task_run`, which also writes the images asked
for (annotated, masks, heatmaps).

Images are decoded and preprocessed exactly as the manifest says
(:mod:`edge_runtime.preprocessing`) and run with :class:`edge_runtime.InferenceSession`.
Fail closed, keep going: a file that cannot be used, a batch whose inference fails and an
image whose outputs are not finite (NaN/inf: never a class) each yield a :class:`Result` with
``error`` set; the other images still run. The watch-folder loop is in
:mod:`edge_runtime.validation.watcher`, result files in :mod:`edge_runtime.validation.results`.
"""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.bundle import load_bundle
from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.preprocessing import ImageError, Preprocessing, decode_with_original, list_images, load_image, \
    normalize
from edge_runtime.trust import TrustPolicy
from edge_runtime.validation.results import Result, format_results, printable, summary_line, write_results
from edge_runtime.validation.task_run import IMAGE_FLAGS, ImageFolder, TaskRun
from edge_runtime.validation.watcher import watch

__all__ = ["BundleRunner", "Result", "format_results", "run_bundle", "summary_line", "watch", "write_results"]

log = logging.getLogger(__name__)

#: Largest decoded image, in multiples of the model's input pixels (and at least MIN_IMAGE_PIXELS):
#: a small PNG that decodes to gigabytes (a decompression bomb) is refused before decoding.
IMAGE_PIXELS_PER_INPUT_PIXEL = 400
MIN_IMAGE_PIXELS = 24_000_000  # a 24 MP camera frame always passes


class BundleRunner:
    """A bundle opened for inference on images.

    Args:
        bundle_dir: the bundle (its sha256s are verified first).
        threads: intra-op threads (None: the device profile's or all CPUs).
        device: a device profile name or path (sets threads and dense/sparse crossovers).
        sparsity: "auto", "off" or "force" (see :class:`edge_runtime.InferenceSession`).
        exact_size: refuse images that are not the model's input size instead of resizing them.
        trust: pinned signing keys (default: environment and config directory; docs/trust.md).
        annotated: detection: a folder for each image with its boxes drawn.
        masks: segmentation: a folder for each image's mask (palette PNG of class indices).
        heatmaps: anomaly: a folder for each image's anomaly map over the image.
        overwrite: replace existing files in those folders.
        int8: run the bundle's int8 model (``export --quantize int8``) instead of the fp32 one.

    Raises:
        BundleError: a bad manifest, a refused signature, a file failing its checksum, or a
            postprocess naming an output the model does not have.
        InvalidArgumentError: no preprocessing in the manifest, an image folder for another
            task than the bundle's, ``int8`` for a bundle without an int8 model, or bad options.

    Example:
        >>> runner = BundleRunner("out/bundle")  # doctest: +SKIP
        >>> [r.label for r in runner.run_files(["a.png", "b.png"])]  # doctest: +SKIP
        ['ok', 'defect']
    """

    def __init__(self, bundle_dir: str | Path, *, threads: int | None = None, device: str | None = None,
                 sparsity: str = "auto", exact_size: bool = False, trust: TrustPolicy | None = None,
                 annotated: str | Path | None = None, masks: str | Path | None = None,
                 heatmaps: str | Path | None = None, overwrite: bool = False, int8: bool = False) -> None:
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
        model = self.bundle.int8_path if int8 else self.bundle.require_onnx()
        if model is None:
            raise InvalidArgumentError(f"--int8: bundle {str(self.bundle.path)!r} has no int8 model; re-export it with "
                                       f"--quantize int8, or run the fp32 model (drop --int8).")
        # the checked bytes, read once: the model that runs is the one the bundle's checks authenticated
        self.session = edge_runtime.InferenceSession(self.bundle.read_model(model), opts, profile=device,
                                                     sparsity=sparsity, warmup_feed=self.bundle.warmup_feeds())
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_batch = (self.session.get_inputs()[0].shape or [None])[0]
        self.labels = self.bundle.labels
        self._warm: set[tuple[int, ...]] = set()
        self.max_image_pixels = _limit_image_pixels(self.pre)
        self.task = self.bundle.spec.task
        self.post = self._task_run({"--annotated": annotated, "--masks": masks, "--heatmaps": heatmaps}, overwrite)
        self.result_type = Result if self.post is None else self.post.result_type

    def _task_run(self, folders: dict[str, str | Path | None], overwrite: bool) -> TaskRun | None:
        """The task's post-processing (None for a classifier), with its image folder; checks the flags."""
        wanted = IMAGE_FLAGS.get(self.task)
        for flag, folder in folders.items():
            if folder is not None and flag != wanted:
                owner = next(t for t, f in IMAGE_FLAGS.items() if f == flag)
                instead = f" (use {wanted} DIR)" if wanted else ""
                raise InvalidArgumentError(f"{flag} is for {owner} bundles, but {str(self.bundle.path)!r} is a "
                                           f"{self.task} bundle{instead}.")
        if wanted is None:
            return None
        images = None if folders[wanted] is None else ImageFolder(folders[wanted], wanted, overwrite)
        post = TaskRun(self.task, self.bundle.spec.postprocess, self.labels, self.pre.input_size, images)
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in post.output_names() if n not in self.output_names]
        if missing:
            raise BundleError(f"{str(self.bundle.path)!r}: the manifest's postprocess reads output(s) {missing}, but "
                              f"the model's outputs are {self.output_names}; re-export the bundle.")
        return post

    def settle_line_check(self) -> int:
        """Finish the engine's line check on the bundle's golden inputs if the images run so far
        did not (it needs 48 runs; docs/engine.md, "Checked on the line"); returns the runs.

        The engine cache then holds the checked decision, so the next start builds one plan
        instead of two and does not check again. 0 when no check is pending or the bundle has no
        golden inputs.
        """
        if not self.session.line_check_pending:
            return 0
        feeds = self.bundle.warmup_feeds()  # read again here, rather than held for the session's life
        return self.session.finish_line_check(feeds) if feeds else 0

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
        results: dict[str, Any] = {}
        pending: list[tuple[str, NDArray[np.float32], NDArray[np.uint8] | None]] = []
        for path in paths:
            try:
                pending.append((str(path), *self._load(path)))
            except ImageError as exc:
                log.debug("skipping %s: %s", printable(str(path)), exc)
                results[str(path)] = self.result_type(str(path), error=printable(str(exc)))
            if len(pending) == batch:
                results.update((r.path, r) for r in self._infer_safe(pending))
                pending = []
        if pending:
            results.update((r.path, r) for r in self._infer_safe(pending))
        return [results[str(p)] for p in paths]

    def _load(self, path: str | Path) -> tuple[NDArray[np.float32], NDArray[np.uint8] | None]:
        """(model input, the decoded image for a task that reports on it, else None)."""
        with warnings.catch_warnings():  # Pillow only warns between 1x and 2x its pixel limit: refuse there too
            warnings.filterwarnings("error", message=".*decompression bomb.*")
            if self.post is None:
                return load_image(path, self.pre, exact_size=self.exact_size), None
            pixels, original = decode_with_original(path, self.pre, exact_size=self.exact_size)
            return normalize(pixels, self.pre), original

    def _infer_safe(self, items: list[tuple[str, NDArray[np.float32], Any]]) -> list[Any]:
        """:meth:`_infer`, with any failure recorded on each image of the batch (the caller goes on)."""
        try:
            return self._infer(items)
        except InvalidArgumentError:
            raise  # the model cannot be used with 'run' at all (e.g. not a classifier): stop with one line
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the line
            log.debug("inference failed on %s", [printable(item[0]) for item in items], exc_info=True)
            why = printable(f"{type(exc).__name__}: {exc}")
            return [self.result_type(path, error=f"{printable(path)}: inference failed ({why})")
                    for path, *_ in items]

    def _infer(self, items: list[tuple[str, NDArray[np.float32], Any]]) -> list[Any]:
        x = np.stack([arr for _, arr, _ in items])
        if x.shape not in self._warm:  # first call per shape compiles kernels: keep it out of latencies
            self.session.run(None, {self.input_name: x})
            self._warm.add(x.shape)
        start = time.perf_counter()
        outputs = self.session.run(None, {self.input_name: x})
        per_image = (time.perf_counter() - start) * 1000.0 / len(items)
        if self.post is not None:
            return self._task_results(items, outputs, per_image)
        logits = np.asarray(outputs[0], np.float64)
        if logits.ndim != 2:
            raise InvalidArgumentError(f"'run' reports a class per image, but the model's first output has "
                                       f"shape {logits.shape}; expected (batch, classes). For a detector, "
                                       f"segmenter or anomaly model, re-export with --task.")
        finite = np.isfinite(logits).all(axis=1)
        safe = np.where(finite[:, None], logits, 0.0)
        probs = np.exp(safe - safe.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        top = probs.argmax(1)
        return [Result(path, self._label(int(k)), int(k), float(probs[i, k]), per_image) if finite[i] else
                Result(path, error=f"{printable(path)}: the model's output is not finite (NaN or inf), so no class "
                                   f"is reported; check the image and the bundle's preprocessing (mean/std).")
                for i, ((path, _, _), k) in enumerate(zip(items, top))]

    def _task_results(self, items: list[tuple[str, NDArray[np.float32], Any]], outputs: list[Any],
                      per_image: float) -> list[Any]:
        """Post-process each image of a batch; non-finite outputs and unwritable images fail that image only."""
        named = {n: np.asarray(o) for n, o in zip(self.output_names, outputs)}
        used = self.post.output_names()
        results = []
        for i, (path, _, pixels) in enumerate(items):
            one = {n: a[i:i + 1] for n, a in named.items()}
            if not all(np.isfinite(one[n]).all() for n in used):
                results.append(self.result_type(path, error=f"{printable(path)}: the model's output is not finite "
                                                f"(NaN or inf), so nothing is reported; check the image and the "
                                                f"bundle's preprocessing (mean/std)."))
                continue
            try:
                results.append(self.post.result(path, one, pixels, per_image))
            except OSError as exc:  # an image file that exists (no --overwrite) or cannot be written
                results.append(self.result_type(path, error=f"{printable(path)}: {printable(str(exc))}"))
        return results

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def run_bundle(bundle_dir: str | Path, inputs: Iterable[str | Path], *, batch: int = 1, threads: int | None = None,
               device: str | None = None, sparsity: str = "auto", exact_size: bool = False,
               **images: Any) -> list[Any]:
    """Run a bundle on image files and directories of images (classify, detect, segment, score).

    Args:
        bundle_dir: the bundle directory.
        inputs: image files and/or directories (searched recursively for image suffixes).
        batch: images per inference call.
        threads: intra-op threads.
        device: a device profile name or path.
        sparsity: "auto", "off" or "force".
        exact_size: refuse wrongly sized images instead of resizing them.
        images: ``annotated=``, ``masks=``, ``heatmaps=`` folders and ``overwrite=`` (:class:`BundleRunner`).

    Returns:
        One result per image, in input order (:class:`Result` for a classifier, else the
        task's type in :mod:`edge_runtime.validation.task_results`); failed images have ``error`` set.

    Raises:
        BundleError: bad manifest or checksum (before any image is read).
        InvalidArgumentError: an input path that does not exist, or bad options.
    """
    runner = BundleRunner(bundle_dir, threads=threads, device=device, sparsity=sparsity, exact_size=exact_size,
                          **images)
    results = runner.run_files(list_images(inputs), batch)
    runner.settle_line_check()
    return results


def _limit_image_pixels(pre: Preprocessing) -> int | None:
    """Set Pillow's decompression-bomb limit from the model's input size; returns it (None: no Pillow).

    Pillow's limit is process-wide (``Image.MAX_IMAGE_PIXELS``); ``run`` owns its process.
    """
    try:
        from PIL import Image
    except ImportError:
        return None
    height, width = pre.input_size
    limit = max(MIN_IMAGE_PIXELS, IMAGE_PIXELS_PER_INPUT_PIXEL * int(height) * int(width))
    Image.MAX_IMAGE_PIXELS = limit
    return limit

