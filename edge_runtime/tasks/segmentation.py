"""Turn a segmenter's output into a class mask at the image's size, and the defect area (numpy).

``format="logits"`` (1, C, H, W): the scores are resized to the image (bilinear, half-pixel
centres: PyTorch's ``F.interpolate(..., align_corners=False)``) and the mask is their argmax;
with ``resize="nearest"`` the argmax is taken first and the mask resized nearest-neighbour.
``format="probability"`` (1, 1, H, W): mask = probability > ``threshold`` (1 = defect).
Resizing uses the runtime's Resize op (:mod:`edge_runtime.ops.resize`), so the device and
the ONNX graph resize the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidInputError
from edge_runtime.ops.resize import resize
from edge_runtime.tasks.spec import SegmentationSpec

#: Class colours when the manifest gives none: background black, then distinct hues.
PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128))


@dataclass(frozen=True)
class Mask:
    """One image's mask and its defect area.

    Example:
        >>> m = Mask(np.array([[0, 1], [1, 2]], np.int32), background=0)
        >>> m.defect_pixels, m.defect_fraction, m.pixels_per_class(3).tolist()
        (3, 0.75, [1, 2, 1])
    """

    classes: NDArray[np.int32]   # (H, W) class index per pixel
    background: int | None = 0   # the class that is not a defect (None: every class is one)

    @property
    def defect_pixels(self) -> int:
        """Pixels of any class but the background."""
        return int(self.classes.size if self.background is None else np.count_nonzero(self.classes != self.background))

    @property
    def defect_fraction(self) -> float:
        """:attr:`defect_pixels` / all pixels."""
        return self.defect_pixels / max(self.classes.size, 1)

    def pixels_per_class(self, count: int) -> NDArray[np.int64]:
        """(count,) pixels of each class index."""
        return np.bincount(self.classes.reshape(-1), minlength=count)[:count].astype(np.int64)


def _map(outputs: Mapping[str, Any], name: str) -> NDArray[np.float32]:
    """Output ``name`` of one image as (C, H, W)."""
    if name not in outputs:
        raise InvalidInputError(f"segmentation: the model has no output {name!r} (outputs: {sorted(outputs)}); "
                                f"fix postprocess.output in the manifest.")
    arr = np.asarray(outputs[name], np.float32)
    arr = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.ndim != 3:
        raise InvalidInputError(f"segmentation: output {name!r} has shape {np.shape(outputs[name])}; expected "
                                f"one image's (1, C, H, W).")
    return arr


def resize_map(scores: NDArray[Any], size: tuple[int, int], mode: str = "bilinear") -> NDArray[Any]:
    """Resize (C, H, W) to (C, *size) like ``F.interpolate(mode, align_corners=False)``.

    Args:
        scores: (C, H, W) array.
        size: (H, W) wanted.
        mode: "bilinear" or "nearest".

    Returns:
        (C, size[0], size[1]) in ``scores``' dtype.
    """
    if tuple(scores.shape[1:]) == tuple(size):
        return scores
    if mode == "nearest":
        return resize(scores, sizes=np.array([scores.shape[0], *size]), mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return resize(scores, sizes=np.array([scores.shape[0], *size]), mode="linear",
                  coordinate_transformation_mode="half_pixel")


def masks(outputs: Mapping[str, Any], spec: SegmentationSpec, image_shape: tuple[int, int]) -> Mask:
    """One image's class mask at ``image_shape`` (H, W).

    Args:
        outputs: output name -> array of one image ((1, C, H, W) or (C, H, W)).
        spec: the bundle's segmentation postprocess.
        image_shape: (H, W) of the image the mask is reported on.

    Returns:
        The :class:`Mask` (probability format: 0 background, 1 defect).

    Raises:
        InvalidInputError: a missing output or a shape that is not one image's map.

    Example:
        >>> spec = SegmentationSpec(output="p", format="probability", threshold=0.5)
        >>> masks({"p": np.array([[[[0.9, 0.1]]]])}, spec, (2, 4)).classes.tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0]]
    """
    scores = _map(outputs, spec.output)
    if spec.format == "probability":
        if scores.shape[0] != 1:
            raise InvalidInputError(f"segmentation: output {spec.output!r} has {scores.shape[0]} channels; format "
                                    f"'probability' expects 1 (use format 'logits' for per-class scores).")
        prob = resize_map(scores, image_shape, spec.resize)[0]
        return Mask((prob > spec.threshold).astype(np.int32), background=0)
    background = spec.background if spec.background is not None and spec.background < scores.shape[0] else None
    if spec.resize == "nearest":
        small = scores.argmax(0).astype(np.int32)[None]
        return Mask(resize_map(small, image_shape, "nearest")[0], background=background)
    return Mask(resize_map(scores, image_shape, "bilinear").argmax(0).astype(np.int32), background=background)


def colors(spec: SegmentationSpec, count: int) -> NDArray[np.uint8]:
    """(count, 3) RGB colour per class: the manifest's, else :data:`PALETTE` (repeated)."""
    chosen = spec.colors if len(spec.colors) >= count else tuple(PALETTE[i % len(PALETTE)] for i in range(count))
    return np.asarray(chosen[:count], np.uint8).reshape(count, 3)
