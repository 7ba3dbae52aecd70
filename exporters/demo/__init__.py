"""Embedded demo: synthetic surface-defect data (with defect masks) and small shipped inspection models.

Public API::

    from exporters.demo import DemoDataConfig, load_splits, load_pretrained
    splits = load_splits(DemoDataConfig())          # {"train": (x, y, meta), "test": ...}; meta["mask"]: (N, H, W)
    model = load_pretrained("cnn")                  # or "vit"; offline, from assets/
    segmenter = load_pretrained("unet")             # per-pixel logits [background, defect]

Data generation (``dataset``) needs numpy (and pillow for the photographic textures);
``models`` and ``train`` need torch. Names are imported lazily.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DemoDataConfig": "exporters.demo.dataset", "DemoDataError": "exporters.demo.dataset",
    "LABELS": "exporters.demo.dataset", "MASK_CLASSES": "exporters.demo.dataset",
    "export_imagefolder": "exporters.demo.dataset",
    "load_splits": "exporters.demo.dataset", "make_split": "exporters.demo.dataset",
    "preprocessing": "exporters.demo.dataset", "to_tensor": "exporters.demo.dataset",
    "torch_dataset": "exporters.demo.dataset",
    "InspectionCNN": "exporters.demo.models", "InspectionViT": "exporters.demo.models",
    "InspectionUNet": "exporters.demo.models",
    "MODELS": "exporters.demo.models", "build_model": "exporters.demo.models",
    "load_pretrained": "exporters.demo.models",
    "TrainConfig": "exporters.demo.train", "evaluate": "exporters.demo.train", "train": "exporters.demo.train",
    "train_segmenter": "exporters.demo.train_segmenter", "mask_scores": "exporters.demo.seg_metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'exporters.demo' has no attribute {name!r}")
