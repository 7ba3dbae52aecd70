"""Surface backgrounds for the demo data: procedural textures and shipped CC0 photographs.

Every function returns a float32 grayscale image in roughly [0, 1] of shape ``(size, size)``
and draws all its randomness from the ``numpy.random.Generator`` it is given, so an image
is a pure function of its generator's seed.

Procedural kinds: ``brushed`` (brushed metal: fine streaks along one direction),
``noise`` (multi-octave value noise, a Perlin-like cast or painted surface), ``woven``
(fabric / carbon-fibre over-under weave). Photographic kinds: ``brick``, ``grass`` and
``gravel``, 256x256 downscaled copies of scikit-image's CC0 textures (see
docs/demo_data.md for their provenance), sampled with a random scale, rotation and offset.

Example:
    >>> import numpy as np
    >>> img = make_background("noise", np.random.default_rng(0), 64)
    >>> img.shape, img.dtype
    ((64, 64), dtype('float32'))
"""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np
from numpy.typing import NDArray

PROCEDURAL = ("brushed", "noise", "woven")
PHOTOGRAPHIC = ("brick", "grass", "gravel")
KINDS = PROCEDURAL + PHOTOGRAPHIC

F32 = NDArray[np.float32]


@functools.lru_cache(maxsize=None)
def load_texture(name: str) -> F32:
    """Return the shipped CC0 texture ``name`` as float32 (256, 256) in [0, 1] (cached).

    Raises:
        ValueError: if ``name`` is not one of :data:`PHOTOGRAPHIC`.
    """
    if name not in PHOTOGRAPHIC:
        raise ValueError(f"unknown texture {name!r}; shipped textures: {PHOTOGRAPHIC}")
    from PIL import Image  # pillow is only needed for the photographic kinds

    ref = resources.files("exporters.demo") / "assets" / f"texture_{name}.png"
    with resources.as_file(ref) as path, Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    arr.setflags(write=False)
    return arr


def rotated_grid(rng: np.random.Generator, size: int, scale: float) -> tuple[F32, F32]:
    """Pixel coordinates ``(u, v)`` of a randomly rotated and scaled frame, centred at 0.

    ``u``/``v`` are in source units: one output pixel spans ``scale`` source pixels.
    """
    theta = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    r = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * scale
    yy, xx = r[:, None], r[None, :]
    return (c * xx - s * yy).astype(np.float32), (s * xx + c * yy).astype(np.float32)


def bilinear(src: F32, y: F32, x: F32) -> F32:
    """Sample ``src`` at fractional coordinates ``(y, x)``; outside it the borders are clamped."""
    h, w = src.shape
    y = np.clip(y, 0.0, h - 1.001)
    x = np.clip(x, 0.0, w - 1.001)
    y0, x0 = y.astype(np.int64), x.astype(np.int64)  # floor: coordinates are >= 0 here
    fy, fx = y - y0, x - x0
    flat = src.ravel()
    i00 = y0 * w + x0
    top = flat[i00] * (1 - fx) + flat[i00 + 1] * fx
    bottom = flat[i00 + w] * (1 - fx) + flat[i00 + w + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _mirrored(name: str) -> F32:
    """The texture with a mirrored border of half its size, so rotated crops never clamp."""
    src = load_texture(name)
    pad = src.shape[0] // 2
    out = np.pad(src, pad, mode="reflect")
    out.setflags(write=False)
    return out


def _interp_matrix(size: int, k: int, step: float) -> F32:
    """``(size, k)`` linear-interpolation weights sampling a k-point grid at ``i * step``."""
    pos = np.arange(size, dtype=np.float32) * step
    i0 = np.minimum(pos.astype(np.int64), k - 2)
    f = pos - i0
    m = np.zeros((size, k), np.float32)
    m[np.arange(size), i0] = 1 - f
    m[np.arange(size), i0 + 1] = f
    return m


def value_noise(rng: np.random.Generator, size: int, cells: float, octaves: int = 4,
                persistence: float = 0.5) -> F32:
    """Multi-octave value noise (Perlin-like) in [0, 1]; ``cells`` = grid cells across at octave 0."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2**o
        k = int(np.ceil(n)) + 2
        grid = rng.random((k, k), dtype=np.float32)
        m = _interp_matrix(size, k, n / size)  # separable: rows then columns
        out += amp * (m @ grid @ m.T)
        total += amp
        amp *= persistence
    return out / total


def brushed_metal(rng: np.random.Generator, size: int) -> F32:
    """Fine streaks along a random direction over a faint low-frequency sheen."""
    u, v = rotated_grid(rng, size, scale=1.0)
    n = int(4 * size)
    streaks = rng.standard_normal(n).astype(np.float32)
    for _ in range(2):  # soften so that streaks span 1-3 px across
        streaks = (streaks + np.roll(streaks, 1) + np.roll(streaks, -1)) / 3.0
    lines = np.interp(v.ravel() + n / 2, np.arange(n), streaks).reshape(size, size)
    along = np.interp(u.ravel() / 16.0 + n / 2, np.arange(n), rng.standard_normal(n)).reshape(size, size)
    sheen = value_noise(rng, size, cells=rng.uniform(1.0, 2.5), octaves=2)
    img = 0.55 + rng.uniform(0.03, 0.08) * lines * (1 + 0.3 * along) + 0.15 * (sheen - 0.5)
    return img.astype(np.float32)


def woven(rng: np.random.Generator, size: int) -> F32:
    """Over-under weave (fabric, carbon fibre) with a random period and orientation."""
    period = rng.uniform(5.0, 10.0)
    u, v = rotated_grid(rng, size, scale=1.0)
    cu, cv = np.floor(u / period), np.floor(v / period)
    pu, pv = (u / period) - cu, (v / period) - cv
    warp = np.sin(np.pi * pv) ** 0.6  # thread running along u: bright in its middle
    weft = np.sin(np.pi * pu) ** 0.6
    over = (cu + cv) % 2 == 0
    img = np.where(over, warp, weft) * rng.uniform(0.25, 0.45) + 0.35
    img += 0.05 * (value_noise(rng, size, cells=3.0, octaves=3) - 0.5)
    return img.astype(np.float32)


def photo(rng: np.random.Generator, size: int, name: str) -> F32:
    """A rotated, scaled crop of a shipped CC0 texture, contrast-reduced to a surface-like range."""
    src = _mirrored(name)
    pad = src.shape[0] // 4
    scale = rng.uniform(0.5, 1.25) * 128.0 / size  # source px per output px: a 64-160 px window
    u, v = rotated_grid(rng, size, scale)
    cy, cx = rng.uniform(pad, 3 * pad, 2)  # centre inside the original texture
    img = bilinear(src, v + cy, u + cx)
    img = (img - img.mean()) * rng.uniform(0.25, 0.5) + 0.5
    return img.astype(np.float32)


def make_background(kind: str, rng: np.random.Generator, size: int) -> F32:
    """Return one ``(size, size)`` float32 background of ``kind`` (one of :data:`KINDS`).

    Raises:
        ValueError: on an unknown ``kind``.
    """
    if kind == "brushed":
        return brushed_metal(rng, size)
    if kind == "noise":
        cells = rng.uniform(2.0, 6.0)
        return (0.5 + rng.uniform(0.2, 0.5) * (value_noise(rng, size, cells) - 0.5)).astype(np.float32)
    if kind == "woven":
        return woven(rng, size)
    if kind in PHOTOGRAPHIC:
        return photo(rng, size, kind)
    raise ValueError(f"unknown background kind {kind!r}; expected one of {KINDS}")


def illuminate(rng: np.random.Generator, img: F32) -> F32:
    """Apply a random linear light gradient, vignette, gain and offset (uneven lighting)."""
    size = img.shape[0]
    r = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) / size  # [-0.5, 0.5]
    yy, xx = r[:, None], r[None, :]
    theta = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0.0, 0.35) * (np.cos(theta) * xx + np.sin(theta) * yy)
    vignette = -rng.uniform(0.0, 0.4) * (xx**2 + yy**2)
    gain, offset = rng.uniform(0.7, 1.2), rng.uniform(-0.12, 0.12)
    return ((img * gain + offset) * (1.0 + gradient + vignette)).astype(np.float32)
