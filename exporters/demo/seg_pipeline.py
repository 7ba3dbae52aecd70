"""The demo's second model: the defect segmenter, exported, validated and profiled like the classifier.

Steps (:func:`run_segmenter`): load the shipped U-Net (``assets/unet.pt``) -> calibrate its
sparsity and export ``OUT/segmenter`` with ``task="segmentation"`` -> write an even mix of
good and defect test images with their masks as the labelled NPZ ``validate`` reads
(``OUT/data/segmentation_test.npz``: ``x`` and ``masks``, 0 background / 1 defect) ->
``validate_bundle`` with PyTorch as the reference (IoU and Dice per class, pixel agreement)
-> run edge_runtime on those images for the defect recall and the figure (``segmentation.png``:
image | true mask | predicted mask) -> profile edge vs onnxruntime here. Writes
``segmenter_validation.{json,md}`` and ``segmenter_profile.json`` beside the classifier's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.outputs import atomic_path

log = logging.getLogger(__name__)

CLASSES = ("background", "defect")
BUNDLE = "segmenter"
NPZ = Path("data") / "segmentation_test.npz"
FIGURE = "segmentation.png"
#: validated against PyTorch and profiled; "edge" may hand the whole model to onnxruntime when no
#: island of its own kernels beats it here, "edge-numba" always runs edge_runtime's kernels
BACKENDS = ("edge", "edge-numba", "onnxruntime")
#: the demo's bar: every backend's mask has the PyTorch mask's class on at least this % of the pixels
MIN_AGREEMENT = 99.0
#: training images that calibrate the segmenter's sparsity (each gives 4,096 positions per channel at 64x64)
CALIB_IMAGES = 64


@dataclass
class SegmenterResult:
    """What the report's "Where is the defect" section shows."""

    info: dict[str, Any]            # the checkpoint's metadata (metrics on the full test split)
    bundle: Any                     # exporters.Bundle
    validation: Any                 # ValidationReport (task "segmentation")
    scores: dict[str, Any]          # exporters.demo.seg_metrics.mask_scores of edge_runtime's masks
    profile: Any                    # ProfileResult (edge, onnxruntime)
    figure: Path | None
    images: int

    @property
    def agreement(self) -> dict[str, float | None]:
        """Backend -> % of the test images' pixels whose class is PyTorch's (the reference)."""
        return {c.backend: c.agreement for c in self.validation.task_data if c.backend != self.validation.reference}

    @property
    def passed(self) -> bool:
        """Validation passed and every backend agrees with PyTorch on >= :data:`MIN_AGREEMENT` % of the pixels."""
        return bool(self.validation.passed) and all(a is not None and a >= MIN_AGREEMENT
                                                    for a in self.agreement.values())


def pick_images(y: NDArray[np.int64], count: int) -> NDArray[np.int64]:
    """Indices of the first ``count // 2`` defect and good images (defect first), an even mix.

    Example:
        >>> pick_images(np.array([0, 1, 0, 1, 0, 1]), 4).tolist()
        [1, 3, 0, 2]
    """
    return np.concatenate([np.flatnonzero(y == c)[: max(count // 2, 1)] for c in (1, 0)])


def write_npz(x: NDArray[np.uint8], masks: NDArray[Any], path: Path) -> Path:
    """Write ``validate``'s segmentation NPZ: normalised ``x`` (N, 3, H, W) and 0/1 ``masks`` (N, H, W)."""
    from exporters.demo.dataset import to_tensor

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, x=to_tensor(x).numpy(), masks=(np.asarray(masks) > 0).astype(np.uint8))
    return path


def _export(out: Path, model: Any, x_calib: NDArray[np.uint8], config: Any) -> Any:
    import exporters
    from exporters.demo.dataset import preprocessing, to_tensor

    calib = to_tensor(x_calib)
    report = exporters.calibrate(model, calib, keep_inputs=8)
    return exporters.export(model, calib[:1], out / BUNDLE, calibration=report, formats=("onnx",),
                            labels=list(CLASSES), preprocessing=preprocessing(config), overwrite=True,
                            name="demo-unet", task="segmentation", postprocess={"classes": list(CLASSES)})


def _edge_masks(bundle_dir: Path, x: NDArray[np.float32], threads: int) -> NDArray[np.int64]:
    """edge_runtime's post-processed masks (N, H, W) of normalised ``x``, decoded as ``validate`` does."""
    from edge_runtime.bundle import load_bundle
    from edge_runtime.validation.engines import open_engines, run_batched
    from edge_runtime.validation.task_validate import TaskValidator

    bundle = load_bundle(bundle_dir)
    (engine,), _ = open_engines(bundle, ["edge"], explicit=True, threads=threads)
    validator = TaskValidator(bundle, tuple(x.shape[1:]), max_drop=1.0)
    return validator.decode(validator.per_image(run_batched(engine, x)))


def figure(x: NDArray[np.uint8], truth: NDArray[Any], pred: NDArray[Any], titles: Sequence[str],
           path: Path) -> Path | None:
    """Rows of image | true mask | predicted mask (defect pixels red over the image); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no segmentation figure (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(len(x), 3, figsize=(6.6, 2.2 * len(x)), squeeze=False)
    for row, (img, t, p, title) in enumerate(zip(x, truth, pred, titles)):
        title = "good part (no defect)" if title == "none" else title
        for col, (mask, name) in enumerate(((None, f"image: {title}"), (t, "true mask"),
                                            (p, "predicted mask (edge_runtime)"))):
            ax = axes[row, col]
            shown = img.copy()
            if mask is not None:
                shown = (0.45 * shown).astype(np.uint8)
                shown[np.asarray(mask) > 0] = (230, 25, 75)
            ax.imshow(shown, interpolation="nearest")
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"test image {row + 1}", fontsize=8)
    fig.suptitle("Where is the defect: red = defect pixels", fontsize=9)
    from exporters.demo.report import save_figure

    return save_figure(fig, path, dpi=100)


def _figure_rows(types: NDArray[Any]) -> list[int]:
    """One image of each defect type, then one good image (positions in the picked set)."""
    rows = [int(np.flatnonzero(types == t)[0]) for t in dict.fromkeys(types.tolist()) if t != "none"]
    good = np.flatnonzero(types == "none")
    return sorted(rows)[:4] + ([int(good[0])] if good.size else [])


def run_segmenter(settings: Any, data: dict[str, Any], say: Any = None) -> SegmenterResult:
    """Export, validate and profile the shipped segmenter on ``data`` (the demo's splits).

    Args:
        settings: the demo's DemoSettings (out, seg_images, runs, warmup, threads, progress, calib_samples).
        data: ``{"config", "train", "test"}`` as the demo loads them.

    Returns:
        The :class:`SegmenterResult`.

    Raises:
        EdgeRuntimeError: export, validation or profiling failed (their own messages).
    """
    from edge_runtime.profiling import profile_model
    from edge_runtime.profiling.report import write_json as write_profile
    from edge_runtime.validation import validate_bundle
    from edge_runtime.validation.report import write_json, write_markdown
    from exporters.demo.models import checkpoint_bytes, load_checkpoint
    from exporters.demo.seg_metrics import mask_scores

    model, info = load_checkpoint(checkpoint_bytes("unet"))
    x_train = data["train"][0]
    count = min(settings.calib_samples, CALIB_IMAGES, len(x_train))
    calib = x_train[np.sort(np.random.default_rng(1).choice(len(x_train), count, replace=False))]
    bundle = _export(settings.out, model, calib, data["config"])
    x, y, meta = data["test"]
    idx = pick_images(y, settings.seg_images)
    npz = write_npz(x[idx], meta["mask"][idx], settings.out / NPZ)
    validation = validate_bundle(bundle.path, data=npz, backends=BACKENDS, torch_model=model,
                                 progress=settings.progress, threads=settings.threads)
    write_json(validation, settings.out / "segmenter_validation.json", overwrite=True)
    write_markdown(validation, settings.out / "segmenter_validation.md", overwrite=True)
    with np.load(npz) as z:
        pred = _edge_masks(bundle.path, z["x"], settings.threads)
    scores = mask_scores(pred, meta["mask"][idx], meta["defect_type"][idx])
    rows = _figure_rows(meta["defect_type"][idx])
    fig = figure(x[idx][rows], meta["mask"][idx][rows], pred[rows], meta["defect_type"][idx][rows],
                 settings.out / FIGURE)
    profile = profile_model(bundle.path, backends=BACKENDS, devices=(), runs=settings.runs, warmup=settings.warmup,
                            input="golden", threads=settings.threads, progress=settings.progress)
    write_profile(profile, settings.out / "segmenter_profile.json", overwrite=True)
    return SegmenterResult(info, bundle, validation, scores, profile, fig, len(idx))
