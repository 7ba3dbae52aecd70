"""Tiny hand-set models for each task (32x32 RGB in 0..1), and images they respond to.

- :class:`GridDetector`: YOLO layout (B, 4 + 2, 16): one 8x8 cell per box, box = the cell,
  class scores = how red / how green the cell is (sigmoid).
- :class:`ColorSegmenter`: logits (B, 3, 16, 16): background, red, green, at half resolution.
- :class:`SpotAnomaly`: map (B, 1, 8, 8) = squared distance from mid-grey, pooled; score (B,) = its max.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

PRE = {"input_size": [32, 32], "resize": "bilinear", "channel_order": "RGB", "value_range": [0, 1],
       "layout": "NCHW"}
CLASSES = ["red", "green"]


class GridDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(8)
        centres = (torch.arange(4, dtype=torch.float32) * 8 + 4)
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        boxes = torch.stack([cx, cy, torch.full_like(cx, 8.0), torch.full_like(cx, 8.0)])  # (4, 4, 4)
        self.register_buffer("boxes", boxes.reshape(1, 4, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool(x)                                              # (B, 3, 4, 4)
        red = torch.sigmoid(12 * (p[:, 0] - p[:, 1] - p[:, 2] - 0.3))  # (B, 4, 4)
        green = torch.sigmoid(12 * (p[:, 1] - p[:, 0] - p[:, 2] - 0.3))
        scores = torch.stack([red, green], 1).flatten(2)              # (B, 2, 16)
        return torch.cat([self.boxes.expand(x.shape[0], 4, 16), scores], 1)  # (B, 6, 16)


class ColorSegmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0., 0., 0.], [4., -2., -2.], [-2., 4., -2.]]).reshape(3, 3, 1, 1))
            self.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))                                # (B, 3, 16, 16)


class SpotAnomaly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.pool(((x - 0.5) ** 2).mean(1, keepdim=True))      # (B, 1, 8, 8)
        return amap, amap.flatten(1).amax(1)                          # (B, 1, 8, 8), (B,)


def colour_squares(seed: int, cells: list[tuple[int, int, int]], size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """uint8 (H, W, 3) dark noise with pure red (k=0) / green (k=1) squares on 8x8 cells (row, col)."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 30, (32, 32, 3))
    for row, col, k in cells:
        img[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] = 0
        img[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8, k] = 255
    img = img.astype(np.uint8)
    if size != (32, 32):  # nearest upscale, so the squares stay squares (size = (H, W), multiples of 32)
        img = img.repeat(size[0] // 32, 0).repeat(size[1] // 32, 1)
    return img


def grey_part(seed: int, spot: bool = False) -> np.ndarray:
    """uint8 (32, 32, 3): mid-grey with mild noise; ``spot`` adds a white 4x4 defect."""
    rng = np.random.default_rng(seed)
    img = 128 + rng.normal(0, 12, (32, 32, 3))
    if spot:
        r, c = rng.integers(0, 28, 2)
        img[r:r + 4, c:c + 4] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> float (N, 3, 32, 32) in 0..1, as PRE says."""
    return torch.from_numpy(images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
