"""Turn image files into model inputs exactly as a bundle's manifest says (torch-free).

The one implementation of the preprocessing schema in docs/bundle.md, used on the device
(``edge-runtime run``/``validate``) and meant to be used by the exporters too, so the pixels
PyTorch saw at export and the pixels the device feeds are computed by the same code::

    decode (Pillow) -> convert to RGB / L -> resize to input_size -> channel order
    -> 0..255 mapped to value_range -> (v - mean) / std -> layout NCHW / NHWC

Pillow is imported lazily (only image decoding needs it).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError, InvalidInputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
RESIZE_MODES = ("bilinear", "nearest", "bicubic")
# 8-bit modes whose samples map to 0..255; 16-bit / float images would be silently clipped
_EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


class ImageError(InvalidInputError):
    """One image file cannot be used: unreadable, wrong size (exact-size mode) or unusable mode."""

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        super().__init__(f"{os.fspath(path)}: {message}")
        self.path = os.fspath(path)


@dataclass(frozen=True)
class Preprocessing:
    """The manifest's preprocessing, checked, with defaults filled in.

    ``resize=None`` means "do not resize": every image must already be ``input_size``.

    Example:
        >>> pre = Preprocessing.from_dict({"input_size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3})
        >>> pre.channels, pre.layout
        (3, 'NCHW')
    """

    input_size: tuple[int, int]  # (H, W)
    resize: str | None = "bilinear"
    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"

    @property
    def channels(self) -> int:
        """1 for channel_order "L", else 3."""
        return 1 if self.channel_order == "L" else 3

    @classmethod
    def from_dict(cls, pre: dict[str, Any] | None) -> Preprocessing:
        """Check a manifest preprocessing dict (docs/bundle.md) and fill in defaults.

        Raises:
            InvalidArgumentError: not a dict, no ``input_size`` or a field with a bad value;
                the message names the field, its value and what is expected.
        """
        if not isinstance(pre, dict) or "input_size" not in pre:
            raise InvalidArgumentError(
                f"preprocessing={pre!r} must be a dict with at least 'input_size': [H, W] (schema in "
                f"docs/bundle.md); re-export the bundle with preprocessing=... to run it on images.")
        try:
            out = cls(input_size=_pair(pre["input_size"], int), resize=pre.get("resize", "bilinear"),
                      channel_order=pre.get("channel_order", "RGB"),
                      value_range=_pair(pre.get("value_range", (0.0, 1.0)), float),
                      mean=_floats(pre.get("mean")), std=_floats(pre.get("std")),
                      layout=pre.get("layout", "NCHW"))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"preprocessing={pre!r}: {exc}; expected numbers as in "
                                       f"docs/bundle.md.") from exc
        out._check()
        return out

    def to_dict(self) -> dict[str, Any]:
        """The manifest form (lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def _check(self) -> None:
        n = self.channels
        checks = [
            ("input_size", all(v > 0 for v in self.input_size), "[H, W] with positive ints"),
            ("resize", self.resize is None or self.resize in RESIZE_MODES,
             f"one of {list(RESIZE_MODES)} or null (images must already have input_size)"),
            ("channel_order", self.channel_order in ("RGB", "BGR", "L"), "'RGB', 'BGR' or 'L'"),
            ("layout", self.layout in ("NCHW", "NHWC"), "'NCHW' or 'NHWC'"),
            ("value_range", self.value_range[0] != self.value_range[1], "[low, high] with low != high"),
            ("mean", self.mean is None or len(self.mean) == n, f"{n} values for {self.channel_order}"),
            ("std", self.std is None or (len(self.std) == n and all(v != 0 for v in self.std)),
             f"{n} nonzero values for {self.channel_order}"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise InvalidArgumentError(f"preprocessing[{key!r}]={getattr(self, key)!r} is invalid; "
                                           f"expected {expected}. Fix the bundle's manifest.json.")


def _pair(value: Any, kind: type) -> tuple[Any, Any]:
    values = tuple(kind(v) for v in value)
    if len(values) != 2:
        raise ValueError(f"{list(value)!r} has {len(values)} values, expected 2")
    return values


def _floats(value: Any) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


def decode_image(path: str | os.PathLike, pre: Preprocessing, *, exact_size: bool = False
                 ) -> NDArray[np.uint8]:
    """Decode one image file, convert it to the model's colour mode and size.

    Args:
        path: the image file.
        pre: the preprocessing.
        exact_size: refuse images whose size is not ``input_size`` instead of resizing them
            (always the case when ``pre.resize`` is None).

    Returns:
        uint8 pixels (H, W, C) in the manifest's channel order.

    Raises:
        ImageError: unreadable/corrupt file, a 16-bit or float image, or a wrong size in
            exact-size mode; the message names the file.
    """
    return _decode(path, pre, exact_size, keep_original=False)[0]


def decode_with_original(path: str | os.PathLike, pre: Preprocessing, *, exact_size: bool = False
                         ) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """:func:`decode_image`, and the image as decoded: uint8 RGB (H0, W0, 3) at its own size.

    For outputs reported on the image rather than on the model input (boxes, masks, maps).

    Raises:
        ImageError: as :func:`decode_image`.
    """
    model, original = _decode(path, pre, exact_size, keep_original=True)
    return model, original  # type: ignore[return-value]


def _decode(path: str | os.PathLike, pre: Preprocessing, exact_size: bool, keep_original: bool
            ) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None]:
    Image = _pil()
    height, width = pre.input_size
    original = None
    try:
        with Image.open(path) as img:
            img.load()
            _check_image(path, img, pre, exact_size)
            if keep_original:
                original = np.asarray(img.convert("RGB"), dtype=np.uint8)
            img = img.convert("L" if pre.channel_order == "L" else "RGB")
            if img.size != (width, height):
                img = img.resize((width, height), getattr(Image, pre.resize.upper()))
            arr = np.asarray(img, dtype=np.uint8)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError
        raise ImageError(path, f"cannot be decoded as an image ({type(exc).__name__}: {exc}); "
                               f"remove or replace the file") from exc
    arr = arr[:, :, None] if arr.ndim == 2 else arr  # (H, W, C)
    return (arr[:, :, ::-1] if pre.channel_order == "BGR" else arr), original


def _check_image(path: str | os.PathLike, img: Any, pre: Preprocessing, exact_size: bool) -> None:
    if img.mode not in _EIGHT_BIT_MODES:
        raise ImageError(path, f"has mode {img.mode!r} (16-bit or float samples), which cannot be "
                               f"mapped to value_range {list(pre.value_range)} as 0..255; save it as "
                               f"8-bit RGB or grayscale")
    height, width = pre.input_size
    if (exact_size or pre.resize is None) and img.size != (width, height):
        raise ImageError(path, f"is {img.size[0]}x{img.size[1]} (WxH) but the model takes exactly "
                               f"{width}x{height} and resizing is off; crop/resize the image or allow "
                               f"resizing (no --exact-size, manifest 'resize' set)")
    if img.size[0] < 1 or img.size[1] < 1:
        raise ImageError(path, f"has an empty size {img.size}")


def normalize(pixels: NDArray[Any], pre: Preprocessing) -> NDArray[np.float32]:
    """Map pixels (..., H, W, C) in 0..255 to model input values in the manifest's layout.

    Args:
        pixels: uint8 or float pixels, one image (H, W, C) or a batch (N, H, W, C).
        pre: the preprocessing.

    Returns:
        float32 (C, H, W) / (N, C, H, W) for NCHW, else the input's shape.
    """
    low, high = pre.value_range
    arr = np.asarray(pixels, dtype=np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
    if pre.mean is not None:
        arr = arr - np.asarray(pre.mean, np.float32)
    if pre.std is not None:
        arr = arr / np.asarray(pre.std, np.float32)
    if pre.layout == "NCHW":
        arr = np.moveaxis(arr, -1, -3)
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_pixels(x: NDArray[Any], pre: Preprocessing) -> NDArray[np.float32]:
    """Invert :func:`normalize`: model inputs (N, ...) back to float pixels (N, H, W, C) in 0..255.

    Raises:
        InvalidInputError: ``x`` does not have the shape the preprocessing produces.
    """
    arr = np.asarray(x, dtype=np.float32)
    height, width = pre.input_size
    expected = (pre.channels, height, width) if pre.layout == "NCHW" else (height, width, pre.channels)
    if arr.ndim != 4 or arr.shape[1:] != expected:
        raise InvalidInputError(f"inputs of shape {arr.shape} do not match the preprocessing "
                                f"({pre.layout}, input_size {list(pre.input_size)}); expected "
                                f"(N, {', '.join(map(str, expected))}).")
    if pre.layout == "NCHW":
        arr = np.moveaxis(arr, 1, -1)
    if pre.std is not None:
        arr = arr * np.asarray(pre.std, np.float32)
    if pre.mean is not None:
        arr = arr + np.asarray(pre.mean, np.float32)
    low, high = pre.value_range
    return ((arr - np.float32(low)) * np.float32(255.0 / (high - low))).astype(np.float32)


def load_image(path: str | os.PathLike, pre: Preprocessing | dict[str, Any], *,
               exact_size: bool = False) -> NDArray[np.float32]:
    """Decode and preprocess one image: float32 (C, H, W) for NCHW or (H, W, C) for NHWC.

    Raises:
        ImageError: the file cannot be used (see :func:`decode_image`).
        InvalidArgumentError: ``pre`` is not a valid preprocessing dict.
    """
    pre = pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(pre)
    return normalize(decode_image(path, pre, exact_size=exact_size), pre)


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and directories (recursively, sorted) into image files.

    Files given explicitly are kept whatever their suffix (so an unreadable one is reported,
    not skipped); directories contribute files with an image suffix.

    Raises:
        InvalidArgumentError: a path that does not exist.
    """
    out: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                              and not p.name.startswith(".")))
        elif path.is_file():
            out.append(path)
        else:
            raise InvalidArgumentError(f"input {str(path)!r} does not exist; pass image files or "
                                       f"directories of images.")
    return out


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise InvalidArgumentError("reading images needs Pillow, which is not installed; install it "
                                   "with: pip install pillow") from exc
    return Image


def stack(images: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
    """Stack preprocessed images into a batch (N, ...)."""
    return np.ascontiguousarray(np.stack(images), dtype=np.float32)
