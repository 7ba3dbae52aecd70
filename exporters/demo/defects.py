"""Defects drawn onto a float32 grayscale surface: scratches, cracks, pits and stains.

Each drawer returns an additive float32 ``(size, size)`` layer (signed: dark defects are
negative) built from distance fields, so a whole defect is a few vectorised numpy
expressions. Contrast ranges start faint on purpose (a short scratch at 0.04 on a busy
texture is hard to see; the ranges were raised once so that the shipped
models exceed 90 % test accuracy within a few CPU minutes) so that the demo task is learnable but not trivially solved.

Example:
    >>> import numpy as np
    >>> layer = draw_defect("pit", np.random.default_rng(0), 64)
    >>> layer.shape, bool(np.abs(layer).max() > 0)
    ((64, 64), True)
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from exporters.demo.textures import value_noise

DEFECT_TYPES = ("scratch", "crack", "pit", "stain")
#: Class index per mask pixel (:func:`defect_mask`): 0 background, then one class per defect type.
MASK_CLASSES = ("background", *DEFECT_TYPES)
#: A pixel belongs to the defect where the layer changes the surface by at least this share of
#: the defect's peak contrast (a Gaussian line profile: out to 1.67 widths from its centre line).
MASK_LEVEL = 0.25

F32 = NDArray[np.float32]


def _grid(size: int) -> tuple[F32, F32]:
    r = np.arange(size, dtype=np.float32)
    return r[:, None], r[None, :]


def segment_distance(size: int, p0: NDArray, p1: NDArray) -> F32:
    """Distance of every pixel to the segments ``p0[i] -> p1[i]`` (shape ``(n, 2)``, (y, x)); min over i."""
    yy, xx = _grid(size)
    p0 = np.asarray(p0, np.float32).reshape(-1, 2)
    p1 = np.asarray(p1, np.float32).reshape(-1, 2)
    d = p1 - p0                                                    # (n, 2)
    len2 = np.maximum((d**2).sum(1), 1e-6)[:, None, None]          # (n, 1, 1)
    py = yy[None] - p0[:, 0, None, None]                           # (n, H, 1)
    px = xx[None] - p0[:, 1, None, None]                           # (n, 1, W)
    t = np.clip((py * d[:, 0, None, None] + px * d[:, 1, None, None]) / len2, 0.0, 1.0)  # (n, H, W)
    dy = py - t * d[:, 0, None, None]
    dx = px - t * d[:, 1, None, None]
    return np.sqrt(dy**2 + dx**2).min(axis=0).astype(np.float32)


def _sign(rng: np.random.Generator, p_dark: float) -> float:
    return -1.0 if rng.random() < p_dark else 1.0


def scratch(rng: np.random.Generator, size: int) -> F32:
    """A thin straight (or slightly bent) line: 15-55 % of the width, 0.7-1.4 px, faint to clear."""
    length = rng.uniform(0.15, 0.55) * size
    angle = rng.uniform(0, np.pi)
    centre = rng.uniform(0.2 * size, 0.8 * size, 2)
    half = 0.5 * length * np.array([np.sin(angle), np.cos(angle)])
    bend = rng.normal(0, 0.04 * length) * np.array([np.cos(angle), -np.sin(angle)])
    pts = np.stack([centre - half, centre + bend, centre + half])  # two segments, slight bend
    dist = segment_distance(size, pts[:-1], pts[1:])
    width = rng.uniform(0.7, 1.4)
    contrast = rng.uniform(0.08, 0.35) * _sign(rng, 0.5)  # scratches catch light: bright or dark
    return (contrast * np.exp(-0.5 * (dist / width) ** 2)).astype(np.float32)


def crack(rng: np.random.Generator, size: int) -> F32:
    """A dark random-walk polyline (5-14 steps of 2-5 px with a wandering heading)."""
    steps = int(rng.integers(5, 15))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.45, steps))
    lengths = rng.uniform(2.0, 5.0, steps) * size / 64.0
    moves = np.stack([np.sin(heading), np.cos(heading)], 1) * lengths[:, None]
    start = rng.uniform(0.25 * size, 0.75 * size, 2)
    pts = np.vstack([start, start + np.cumsum(moves, 0)])
    dist = segment_distance(size, pts[:-1], pts[1:])
    width = rng.uniform(0.5, 1.3)
    contrast = -rng.uniform(0.12, 0.4)
    return (contrast * np.exp(-0.5 * (dist / width) ** 2)).astype(np.float32)


def pit(rng: np.random.Generator, size: int) -> F32:
    """One to three small round blobs (radius 1.3-3 px), mostly dark, some with a bright rim."""
    yy, xx = _grid(size)
    layer = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.1 * size, 0.9 * size, 2)
        radius = rng.uniform(1.3, 3.0) * size / 64.0
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2
        contrast = rng.uniform(0.12, 0.45) * _sign(rng, 0.75)
        layer += contrast * np.exp(-r2)
        if rng.random() < 0.3:  # bright rim around a dark pit (a dent catching light)
            layer += 0.4 * abs(contrast) * np.exp(-((np.sqrt(r2) - 1.6) ** 2) * 3.0)
    return layer


def stain(rng: np.random.Generator, size: int) -> F32:
    """A soft, irregular, low-contrast blotch (radius 6-20 px) of oil or discolouration."""
    yy, xx = _grid(size)
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    ry, rx = rng.uniform(6.0, 20.0, 2) * size / 64.0
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    r2 = ((c * dy + s * dx) / ry) ** 2 + ((-s * dy + c * dx) / rx) ** 2
    ragged = 1.0 + 0.6 * (value_noise(rng, size, cells=size / 10.0, octaves=2) - 0.5)
    mask = 1.0 / (1.0 + np.exp(np.minimum((r2 * ragged - 1.0) * 6.0, 60.0)))  # soft edge
    contrast = rng.uniform(0.08, 0.2) * _sign(rng, 0.7)
    return (contrast * mask).astype(np.float32)


_DRAWERS = {"scratch": scratch, "crack": crack, "pit": pit, "stain": stain}


def draw_defect(kind: str, rng: np.random.Generator, size: int) -> F32:
    """Return the additive layer of one defect of ``kind`` (one of :data:`DEFECT_TYPES`).

    Raises:
        ValueError: on an unknown ``kind``.
    """
    try:
        drawer = _DRAWERS[kind]
    except KeyError:
        raise ValueError(f"unknown defect type {kind!r}; expected one of {DEFECT_TYPES}") from None
    return drawer(rng, size)


def defect_mask(layer: F32, kind: str) -> NDArray[np.uint8]:
    """The ``(size, size)`` class mask of one drawn defect ``layer`` (:data:`MASK_CLASSES` indices).

    A pixel is of class ``1 + DEFECT_TYPES.index(kind)`` where ``|layer|`` is at least
    :data:`MASK_LEVEL` of the layer's peak ``|layer|``, else background (0). Drawing is
    unchanged, so masks come free with the images.

    Raises:
        ValueError: on an unknown ``kind``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> mask = defect_mask(draw_defect("pit", rng, 64), "pit")
        >>> sorted(np.unique(mask).tolist())
        [0, 3]
    """
    if kind not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {kind!r}; expected one of {DEFECT_TYPES}")
    strength = np.abs(layer)
    peak = float(strength.max())
    if peak <= 0.0:
        return np.zeros(layer.shape, np.uint8)
    return np.where(strength >= MASK_LEVEL * peak, 1 + DEFECT_TYPES.index(kind), 0).astype(np.uint8)
