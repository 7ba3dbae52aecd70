"""The typed sparsity annotation (docs/annotations.md): the half of the exporter/runtime contract
that lives inside the model (``metadata_props["edge_runtime.sparsity"]``), not in the manifest.

Re-exported by :mod:`edge_runtime.contract`, which documents the contract as a whole. Every check
raises one :class:`~edge_runtime.errors.InvalidModelError` naming the layer, key, value and fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge_runtime.errors import InvalidModelError


ANNOTATION_VERSIONS = (1,)


def _annotation_error(index: int, node: Any, key: str, value: Any, expected: str) -> InvalidModelError:
    where = f"layer #{index}" + (f" ({node})" if isinstance(node, str) else "")
    return InvalidModelError(f"Sparsity annotation {where} has {key}={value!r:.80}; expected {expected}. "
                             f"Re-export the model.")


def _optional_number(index: int, node: str, layer: dict[str, Any], key: str) -> float | None:
    value = layer.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _annotation_error(index, node, key, value, "null or a finite number")
    return float(value)


@dataclass(frozen=True)
class LayerAnnotation:
    """One annotated layer: the input density of an ONNX Conv/Gemm/MatMul node.

    Example:
        >>> LayerAnnotation.from_json(0, {"node": "n", "input": "x", "op_type": "Gemm",
        ...                               "density": 0.25}).density
        0.25
    """

    node: str
    input: str
    op_type: str
    density: float
    module: str | None = None
    threshold: float | None = None
    thresholds: tuple[float, ...] | None = None
    relu_fed: bool | None = None
    zero_point: int | None = None  # int8 models: the quantized input's zero point (the value skipped)
    scale: float | None = None     # int8 models: the quantized input's scale

    @classmethod
    def from_json(cls, index: int, layer: Any) -> LayerAnnotation:
        """Validate one ``layers`` entry. Raises InvalidModelError naming the layer and key."""
        if not isinstance(layer, dict):
            raise _annotation_error(index, None, "the entry", type(layer).__name__, "an object")
        node = layer.get("node")
        for key in ("node", "input", "op_type"):
            if not isinstance(layer.get(key), str):
                raise _annotation_error(index, node, key, layer.get(key), "a str")
        density = layer.get("density")
        if isinstance(density, bool) or not isinstance(density, (int, float)) \
                or not 0.0 <= density <= 1.0:
            raise _annotation_error(index, node, "density", density, "a fraction in [0, 1]")
        per_channel = layer.get("thresholds")
        if per_channel is not None and (not isinstance(per_channel, list) or not per_channel or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in per_channel)):
            raise _annotation_error(index, node, "thresholds", per_channel,
                                    "absent, null or a non-empty list of numbers")
        module, relu = layer.get("module"), layer.get("relu_fed")
        zero_point = layer.get("zero_point")
        if zero_point is not None and (isinstance(zero_point, bool) or not isinstance(zero_point, int)
                                       or not -(1 << 15) <= zero_point < (1 << 16)):
            raise _annotation_error(index, node, "zero_point", zero_point, "absent, null or an integer zero point")
        scale = _optional_number(index, node, layer, "scale")
        if scale is not None and scale <= 0:
            raise _annotation_error(index, node, "scale", scale, "absent, null or a positive number")
        return cls(node=node, input=layer["input"], op_type=layer["op_type"], density=float(density),
                   module=module if isinstance(module, str) else None,
                   threshold=_optional_number(index, node, layer, "threshold"),
                   thresholds=tuple(float(v) for v in per_channel) if per_channel else None,
                   relu_fed=relu if isinstance(relu, bool) else None, zero_point=zero_point, scale=scale)


@dataclass(frozen=True)
class Annotations:
    """The whole annotation document; :meth:`density` is what the planner reads.

    Example:
        >>> doc = Annotations.from_json({"version": 1, "layers": [
        ...     {"node": "fc", "input": "h", "op_type": "Gemm", "density": 0.1}]})
        >>> doc.density("fc"), doc.density("other")
        (0.1, None)
    """

    version: int
    layers: tuple[LayerAnnotation, ...]
    producer: str | None = None
    samples: int | None = None

    @classmethod
    def from_json(cls, doc: Any) -> Annotations:
        """Validate a parsed annotation. Raises InvalidModelError (version, layers, keys)."""
        if not isinstance(doc, dict):
            raise InvalidModelError(f"The 'edge_runtime.sparsity' annotation is a {type(doc).__name__}, "
                                    f"expected a JSON object. Re-export the model.")
        version = doc.get("version")
        if version not in ANNOTATION_VERSIONS or isinstance(version, bool):
            raise InvalidModelError(
                f"Sparsity annotation version {version!r} is not supported; this runtime reads versions "
                f"{list(ANNOTATION_VERSIONS)}. Upgrade edge_runtime or re-export with a matching exporter.")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidModelError(f"Sparsity annotation 'layers' is {type(layers).__name__}, expected "
                                    f"a list. Re-export the model.")
        samples = (doc.get("calibration") or {}).get("samples") if isinstance(
            doc.get("calibration"), dict) else None
        producer = doc.get("producer")
        return cls(version=int(version),
                   layers=tuple(LayerAnnotation.from_json(i, layer) for i, layer in enumerate(layers)),
                   producer=producer if isinstance(producer, str) else None,
                   samples=samples if isinstance(samples, int) and not isinstance(samples, bool) else None)

    def density(self, node: str) -> float | None:
        """The annotated input density of ONNX node ``node``; None when not annotated."""
        return next((layer.density for layer in self.layers if layer.node == node), None)
