"""``run`` for detection, segmentation and anomaly bundles: post-process, write images, make results.

:class:`TaskRun` turns one image's outputs into its result with the bundle's postprocess
(:mod:`edge_runtime.tasks`) and writes the images asked for: ``--annotated DIR`` (detection:
the image with its boxes drawn, one colour per class), ``--masks DIR`` (segmentation: a
palette PNG whose pixel values are class indices and whose palette holds the class colours),
``--heatmaps DIR`` (anomaly: the normalised map in colour over the image). Image files go
through :func:`edge_runtime.outputs.atomic_path` and are never overwritten without
``overwrite`` (:class:`ImageFolder`); Pillow, which ``run`` already uses to decode images,
encodes them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError
from edge_runtime.outputs import atomic_path
from edge_runtime.tasks import anomaly, detection, segmentation
from edge_runtime.tasks.spec import AnomalySpec, DetectionSpec, SegmentationSpec, TaskSpec
from edge_runtime.validation.results import printable
from edge_runtime.validation.task_results import AnomalyImageResult, Box, DetectionResult, SegmentationResult

#: The image folder flag of each task.
IMAGE_FLAGS = {"detection": "--annotated", "segmentation": "--masks", "anomaly": "--heatmaps"}
RESULT_TYPES = {"detection": DetectionResult, "segmentation": SegmentationResult, "anomaly": AnomalyImageResult}


class ImageFolder:
    """Where ``run`` writes one PNG per input image, named after it; never overwrites unasked.

    Args:
        folder: the directory (created when its parent exists).
        flag: the CLI flag, for messages.
        overwrite: replace files that exist.

    Raises:
        InvalidArgumentError: the folder is a file, or cannot be created or written.
    """

    def __init__(self, folder: str | Path, flag: str, overwrite: bool = False) -> None:
        self.folder, self.flag, self.overwrite = Path(folder).expanduser(), flag, overwrite
        if self.folder.exists() and not self.folder.is_dir():
            raise InvalidArgumentError(f"{flag} {str(self.folder)!r} is a file; pass a folder for the images.")
        if not self.folder.exists():
            if not self.folder.parent.is_dir():
                raise InvalidArgumentError(f"{flag} {str(self.folder)!r}: the folder {str(self.folder.parent)!r} "
                                           f"does not exist; create it first or choose another path.")
            self.folder.mkdir()
        probe = self.folder / ".edge-runtime-write-test"
        try:
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise InvalidArgumentError(f"{flag} {str(self.folder)!r} is not writable ({exc.strerror}); choose a "
                                       f"folder you can write to.") from exc
        self.used: set[str] = set()

    def name_for(self, image: str | Path, used: set[str] | None = None) -> Path:
        """``FOLDER/<image stem>.png``; ``-2``, ``-3``... when another image of this run took the name."""
        taken = self.used if used is None else used
        stem = Path(image).stem or "image"
        name, n = f"{stem}.png", 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}.png"
        return self.folder / name

    def check(self, images: Sequence[str | Path]) -> None:
        """Refuse, before any work, images whose PNG already exists (without ``overwrite``).

        Raises:
            InvalidArgumentError: naming the first existing file and the fix.
        """
        if self.overwrite:
            return
        taken = set(self.used)
        for image in images:
            target = self.name_for(image, taken)
            taken.add(target.name)
            if target.exists():
                raise InvalidArgumentError(f"{self.flag} {str(target)!r} already exists; pass --overwrite "
                                           f"to replace it or choose another {self.flag} folder.")

    def write(self, image: str | Path, pixels: NDArray[np.uint8], palette: NDArray[np.uint8] | None = None) -> str:
        """Write ``pixels`` ((H, W, 3) RGB, or (H, W) indices with ``palette``) as a PNG; returns its path.

        Raises:
            FileExistsError: the file exists and ``overwrite`` is False (the image fails, the run goes on).
            OSError: the folder became unwritable.
        """
        from PIL import Image

        target = self.name_for(image)
        self.used.add(target.name)
        if target.exists() and not self.overwrite:
            raise FileExistsError(f"{self.flag} {str(target)!r} already exists; pass --overwrite to replace it or "
                                  f"choose another {self.flag} folder")
        picture = Image.fromarray(np.ascontiguousarray(pixels, np.uint8))
        if palette is not None:  # an 'L' image with a palette becomes 'P': the values stay the class indices
            picture.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
        with atomic_path(target, overwrite=self.overwrite) as tmp:
            picture.save(tmp, format="PNG")
        return str(target)


def draw_boxes(pixels: NDArray[np.uint8], boxes: NDArray[Any], colours: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A copy of ``pixels`` (H, W, 3) with box outlines (x1, y1, x2, y2) in ``colours`` (K, 3), numpy only."""
    out = pixels.copy()
    height, width = out.shape[:2]
    t = max(1, round(min(height, width) / 150))  # line width: 1 px up to 150 px, 2 px on 300 px...
    for (x1, y1, x2, y2), colour in zip(np.asarray(boxes), colours):
        c1, r1 = int(np.clip(np.floor(x1), 0, width - 1)), int(np.clip(np.floor(y1), 0, height - 1))
        c2, r2 = int(np.clip(np.ceil(x2) - 1, c1, width - 1)), int(np.clip(np.ceil(y2) - 1, r1, height - 1))
        out[r1:min(r1 + t, r2 + 1), c1:c2 + 1] = colour
        out[max(r2 - t + 1, r1):r2 + 1, c1:c2 + 1] = colour
        out[r1:r2 + 1, c1:min(c1 + t, c2 + 1)] = colour
        out[r1:r2 + 1, max(c2 - t + 1, c1):c2 + 1] = colour
    return out


class TaskRun:
    """Post-processing and image writing for one bundle's task.

    Args:
        task: detection, segmentation or anomaly.
        spec: the bundle's postprocess.
        labels: the manifest's labels (class names when the postprocess has none).
        input_size: the model's (H, W).
        images: the folder for the task's images (``--annotated``/``--masks``/``--heatmaps``), or None.

    Example:
        >>> spec = DetectionSpec(output="y", score_threshold=0.5)
        >>> run = TaskRun("detection", spec, ["pit"], (20, 20))
        >>> y = np.array([[[10.], [10.], [4.], [4.], [0.9]]])
        >>> run.result("a.png", {"y": y}, np.zeros((40, 40, 3), np.uint8), 1.0).boxes[0].x1
        16.0
    """

    def __init__(self, task: str, spec: TaskSpec, labels: Sequence[str], input_size: tuple[int, int],
                 images: ImageFolder | None = None) -> None:
        self.task, self.spec, self.input_size, self.images = task, spec, tuple(input_size), images
        self.result_type = RESULT_TYPES[task]
        named = getattr(spec, "class_names", None) or getattr(spec, "classes", ())
        self.classes = tuple(named) or tuple(labels)

    def output_names(self) -> list[str]:
        """The model outputs the postprocess reads."""
        if isinstance(self.spec, AnomalySpec):
            return [n for n in (self.spec.map_output, self.spec.score_output) if n]
        extra = [self.spec.scores_output] if isinstance(self.spec, DetectionSpec) and self.spec.scores_output else []
        return [self.spec.output, *extra]

    def result(self, path: str, outputs: Mapping[str, Any], pixels: NDArray[np.uint8], latency_ms: float) -> Any:
        """One image's result from its outputs ((1, ...) each) and its decoded pixels (H, W, 3).

        Raises:
            InvalidArgumentError: the outputs do not fit the bundle's postprocess (every image would fail).
        """
        try:
            if isinstance(self.spec, DetectionSpec):
                return self._detection(path, outputs, pixels, latency_ms)
            if isinstance(self.spec, SegmentationSpec):
                return self._segmentation(path, outputs, pixels, latency_ms)
            return self._anomaly(path, outputs, pixels, latency_ms)
        except InvalidInputError as exc:
            raise InvalidArgumentError(f"{exc} (bundle postprocess for task {self.task!r}); re-export the bundle "
                                       f"with the right --task and postprocess flags.") from exc

    def _image(self, path: str, pixels: NDArray[np.uint8], palette: NDArray[np.uint8] | None = None) -> str | None:
        return None if self.images is None else self.images.write(path, pixels, palette)

    def _detection(self, path: str, outputs: Mapping[str, Any], pixels: NDArray[np.uint8], ms: float) -> Any:
        found = detection.decode(outputs, self.spec, pixels.shape[:2], self.input_size)
        names = found.names(self.classes)
        boxes = tuple(Box(printable(n), round(float(s), 6), *(round(float(v), 2) for v in b))
                      for n, s, b in zip(names, found.scores, found.boxes))
        palette = segmentation.PALETTE[1:]
        colours = np.array([palette[k % len(palette)] for k in found.classes.tolist()], np.uint8).reshape(-1, 3)
        annotated = None if self.images is None else self._image(path, draw_boxes(pixels, found.boxes, colours))
        return DetectionResult(path, ms, boxes=boxes, annotated=annotated)

    def _segmentation(self, path: str, outputs: Mapping[str, Any], pixels: NDArray[np.uint8], ms: float) -> Any:
        mask = segmentation.masks(outputs, self.spec, pixels.shape[:2])
        count = max(len(self.classes), int(mask.classes.max()) + 1)
        names = [self.classes[i] if i < len(self.classes) else str(i) for i in range(count)]
        per_class = mask.pixels_per_class(count)
        written = None
        if self.images is not None and count <= 256:
            written = self._image(path, mask.classes.astype(np.uint8), segmentation.colors(self.spec, count))
        return SegmentationResult(path, ms, defect_pixels=mask.defect_pixels,
                                  defect_percent=round(100.0 * mask.defect_fraction, 4),
                                  class_pixels={printable(n): int(v) for n, v in zip(names, per_class)}, mask=written)

    def _anomaly(self, path: str, outputs: Mapping[str, Any], pixels: NDArray[np.uint8], ms: float) -> Any:
        found = anomaly.score_and_map(outputs, self.spec, pixels.shape[:2])
        heat = None
        if self.images is not None:
            blend = 0.45 * pixels.astype(np.float32) + 0.55 * anomaly.heat_colors(found.heatmap)
            heat = self._image(path, np.rint(blend).astype(np.uint8))
        return AnomalyImageResult(path, ms, score=round(found.score, 6), raw_score=round(found.raw_score, 6),
                                  anomalous=found.anomalous, threshold=self.spec.threshold, heatmap=heat)
