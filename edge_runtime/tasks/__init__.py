"""What a bundle's outputs mean and how to read them on the device (numpy only, no torch).

:mod:`~edge_runtime.tasks.spec` is the manifest's ``task``/``postprocess`` schema;
:mod:`~edge_runtime.tasks.detection` decodes boxes and runs class-wise NMS,
:mod:`~edge_runtime.tasks.segmentation` turns scores into class masks at the image's size,
:mod:`~edge_runtime.tasks.anomaly` fits and applies an anomaly threshold (docs/tasks.md).
"""
from edge_runtime.tasks.spec import TASKS, AnomalySpec, DetectionSpec, SegmentationSpec, TaskSpec, parse_task

__all__ = ["TASKS", "AnomalySpec", "DetectionSpec", "SegmentationSpec", "TaskSpec", "parse_task"]
