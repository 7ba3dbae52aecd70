"""Per-image results of ``run`` for detection, segmentation and anomaly bundles.

Each type is an :class:`~edge_runtime.validation.results.Outcome`, the interface the writers
and the summary use: ``ok``, ``record()`` (the JSON object), ``rows()`` (CSV rows with the
columns ``FIELDS``), ``tally()`` and ``line()``. A failed image has only ``path`` and ``error``. Image files written beside the results (annotated images, masks, heatmaps)
are named by their path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from edge_runtime.validation.results import Outcome, printable


@dataclass(frozen=True)
class Box:
    """One detection: class name, score and corners in image pixels."""

    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class _Base(Outcome):
    path: str
    latency_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class DetectionResult(_Base):
    """One image's boxes; the CSV has one row per box (one row with an empty class when none).

    Example:
        >>> r = DetectionResult("a.png", 2.0, boxes=(Box("pit", 0.9, 1, 2, 5, 6),))
        >>> r.rows()[0]["class"], r.tally()
        ('pit', ['pit'])
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("path", "class", "score", "x1", "y1", "x2", "y2", "latency_ms",
                                         "annotated", "error")
    TALLY: ClassVar[str] = "detections"

    boxes: tuple[Box, ...] = ()
    annotated: str | None = None  # the --annotated image written for it

    def rows(self) -> list[dict[str, Any]]:
        """One row per box, or one row without a box (an image with no detection, or a failed one)."""
        base = {"path": self.path, "latency_ms": self.latency_ms, "annotated": self.annotated, "error": self.error}
        empty = {"class": None, "score": None, "x1": None, "y1": None, "x2": None, "y2": None}
        return [base | {"class": b.label, "score": b.score, "x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2}
                for b in self.boxes] or [base | empty]

    def tally(self) -> list[str]:
        """The class of every box ("none" for an image without one)."""
        return [b.label for b in self.boxes] or ["none"]

    def line(self) -> str:
        """``N box(es): best-class score ...``."""
        shown = ", ".join(f"{printable(b.label)} {b.score:.2f} [{b.x1:.0f} {b.y1:.0f} {b.x2:.0f} {b.y2:.0f}]"
                          for b in self.boxes[:3])
        more = f", +{len(self.boxes) - 3}" if len(self.boxes) > 3 else ""
        return f"{len(self.boxes)} box(es)" + (f": {shown}{more}" if shown else "")


@dataclass(frozen=True)
class SegmentationResult(_Base):
    """One image's defect area (pixels and percent of the image) and per-class pixels.

    Example:
        >>> SegmentationResult("a.png", 1.0, defect_pixels=30, defect_percent=3.0).tally()
        ['defect']
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("path", "defect_pixels", "defect_percent", "class_pixels", "mask",
                                         "latency_ms", "error")
    TALLY: ClassVar[str] = "images"

    defect_pixels: int | None = None
    defect_percent: float | None = None
    class_pixels: dict[str, int] | None = None  # class name -> pixels
    mask: str | None = None  # the --masks PNG written for it

    def rows(self) -> list[dict[str, Any]]:
        """One row; ``class_pixels`` as ``name=pixels`` pairs separated by spaces."""
        row = super().rows()[0]
        if self.class_pixels is not None:
            row["class_pixels"] = " ".join(f"{k}={v}" for k, v in self.class_pixels.items())
        return [row]

    def tally(self) -> list[str]:
        """"defect" or "clean"."""
        return ["defect" if self.defect_pixels else "clean"]

    def line(self) -> str:
        """``defect 1234 px (3.01%)``."""
        return f"defect {self.defect_pixels} px ({self.defect_percent:.2f}%)"


@dataclass(frozen=True)
class AnomalyImageResult(_Base):
    """One image's anomaly score (normalised: good parts span 0..1), raw score and decision.

    Example:
        >>> AnomalyImageResult("a.png", 1.0, score=1.4, raw_score=0.2, anomalous=True).tally()
        ['anomalous']
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("path", "score", "raw_score", "anomalous", "threshold", "heatmap",
                                         "latency_ms", "error")
    TALLY: ClassVar[str] = "decisions"

    score: float | None = None
    raw_score: float | None = None
    anomalous: bool | None = None
    threshold: float | None = None
    heatmap: str | None = None  # the --heatmaps PNG written for it

    def tally(self) -> list[str]:
        """"anomalous" or "good"."""
        return ["anomalous" if self.anomalous else "good"]

    def line(self) -> str:
        """``anomalous 1.2345`` / ``good 0.4321``."""
        return f"{self.tally()[0]}\t{self.score:.4f}"
