"""Input corruptions for robustness checks: noise, blur, brightness and JPEG at 3 severities.

Corruptions act on pixels (0..255), not on normalised inputs: model inputs are mapped back
to pixels with the manifest's preprocessing (:func:`edge_runtime.preprocessing.to_pixels`),
corrupted, clipped to 0..255 and preprocessed again. numpy and Pillow only; every random
draw comes from a seeded generator, so a run is reproducible.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import InvalidArgumentError
from edge_runtime.preprocessing import Preprocessing, normalize, to_pixels

SEVERITIES = (1, 2, 3)
# severity -> parameter; chosen so that severity 3 visibly hurts a 32x32 classifier
NOISE_SIGMA = {1: 8.0, 2: 16.0, 3: 32.0}  # Gaussian noise std in pixel levels
BLUR_RADIUS = {1: 0.5, 2: 1.0, 3: 2.0}  # Pillow GaussianBlur radius in pixels
BRIGHTNESS_SHIFT = {1: 25.0, 2: 50.0, 3: 80.0}  # added to every pixel level
JPEG_QUALITY = {1: 50, 2: 20, 3: 8}  # Pillow JPEG quality

Pixels = NDArray[np.float32]  # (N, H, W, C) in 0..255


def _noise(pixels: Pixels, severity: int, seed: int) -> Pixels:
    rng = np.random.default_rng(seed + severity)
    return pixels + rng.normal(0.0, NOISE_SIGMA[severity], pixels.shape).astype(np.float32)


def _brightness(pixels: Pixels, severity: int, seed: int) -> Pixels:
    return pixels + np.float32(BRIGHTNESS_SHIFT[severity])


def _per_image(pixels: Pixels, apply: Callable[[Any], Any]) -> Pixels:
    from PIL import Image

    out = np.empty_like(pixels)
    for i, image in enumerate(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)):
        gray = image.shape[-1] == 1
        pil = Image.fromarray(image[:, :, 0] if gray else image, "L" if gray else "RGB")
        arr = np.asarray(apply(pil), dtype=np.float32)
        out[i] = arr[:, :, None] if gray else arr
    return out


def _blur(pixels: Pixels, severity: int, seed: int) -> Pixels:
    from PIL import ImageFilter

    return _per_image(pixels, lambda im: im.filter(ImageFilter.GaussianBlur(BLUR_RADIUS[severity])))


def _jpeg(pixels: Pixels, severity: int, seed: int) -> Pixels:
    from PIL import Image

    def roundtrip(im: Any) -> Any:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=JPEG_QUALITY[severity])
        buf.seek(0)
        with Image.open(buf) as decoded:
            return decoded.convert(im.mode)

    return _per_image(pixels, roundtrip)


PERTURBATIONS: dict[str, Callable[[Pixels, int, int], Pixels]] = {
    "noise": _noise, "blur": _blur, "brightness": _brightness, "jpeg": _jpeg}


def check_perturbations(names: Sequence[str]) -> tuple[str, ...]:
    """Validate corruption names, keeping their order.

    Raises:
        InvalidArgumentError: an unknown name.
    """
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise InvalidArgumentError(f"perturbation(s) {unknown} not known; choose from "
                                   f"{list(PERTURBATIONS)}, e.g. --perturb noise,blur.")
    return tuple(dict.fromkeys(names))


def perturb(x: NDArray[Any], pre: Preprocessing | dict[str, Any] | None, name: str, severity: int,
            *, seed: int = 0) -> NDArray[np.float32]:
    """Corrupt preprocessed model inputs ``x`` (N, ...) and return them preprocessed again.

    Args:
        x: model inputs as the manifest's preprocessing makes them.
        pre: that preprocessing (needed to get back to pixels).
        name: one of :data:`PERTURBATIONS`.
        severity: one of :data:`SEVERITIES`.
        seed: base seed of the noise generator.

    Returns:
        float32 array with the shape of ``x``.

    Raises:
        InvalidArgumentError: unknown name or severity, or no preprocessing.
    """
    check_perturbations([name])
    if severity not in SEVERITIES:
        raise InvalidArgumentError(f"severity={severity!r}; expected one of {list(SEVERITIES)}.")
    if pre is None:
        raise InvalidArgumentError("input corruptions need the bundle's preprocessing (to get from "
                                   "model inputs back to pixels); re-export with preprocessing=...")
    pre = pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(pre)
    pixels = PERTURBATIONS[name](to_pixels(x, pre), severity, seed)
    return normalize(np.clip(pixels, 0.0, 255.0), pre)
