"""Describe a bundle directory or an .onnx file without importing torch.

Used by ``edge-runtime inspect``: inputs, outputs, op counts, the sparsity annotation and
the bundle manifest, as a dict (``--json``) or as text.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import onnx

from edge_runtime.annotations import read_annotations
from edge_runtime.errors import BundleError, InvalidArgumentError, InvalidModelError


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Summarise a bundle directory (with ``manifest.json``) or an ``.onnx`` file.

    Args:
        path: a bundle directory or an ONNX file.

    Returns:
        ``{"path", "manifest" (or None), "inputs", "outputs", "op_counts", "opset",
        "annotations" (or None)}``.

    Raises:
        InvalidArgumentError: the path does not exist.
        BundleError: a bundle's manifest is unreadable or it has no model.onnx.
        InvalidModelError: the ONNX file cannot be parsed or its annotation is invalid.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidArgumentError(f"{str(path)!r} does not exist; pass a bundle directory "
                                   "or an .onnx file.")
    manifest = None
    model_path = path
    if path.is_dir():
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"Cannot read {str(path / 'manifest.json')!r}: {exc}. "
                              "Re-export the bundle.") from exc
        model_path = path / "model.onnx"
        if not model_path.is_file():
            raise BundleError(f"Bundle {str(path)!r} has no model.onnx (files: "
                              f"{sorted(p.name for p in path.iterdir())}).")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise InvalidModelError(f"Cannot parse {str(model_path)!r} as ONNX: {exc}.") from exc
    return {"path": str(path), "manifest": manifest,
            "inputs": _values(model.graph.input, model), "outputs": _values(model.graph.output, model),
            "op_counts": dict(sorted(collections.Counter(
                n.op_type for n in model.graph.node).items())),
            "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "annotations": read_annotations(model)}


def _values(values: Any, model: onnx.ModelProto) -> list[dict[str, Any]]:
    initializers = {i.name for i in model.graph.initializer}
    out = []
    for value in values:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name \
            if tensor.elem_type else "unknown"
        out.append({"name": value.name, "dtype": dtype,
                    "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]})
    return out


def render(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_path`'s result."""
    lines = [f"{info['path']}"]
    manifest = info.get("manifest")
    if manifest:
        lines.append(f"  model: {manifest.get('name')}  (bundle format "
                     f"{manifest.get('format_version')}, created {manifest.get('created_at')})")
        lines.append(f"  files: {', '.join(sorted(manifest.get('files', {})))}")
        if manifest.get("labels"):
            lines.append(f"  labels: {len(manifest['labels'])}")
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            lines.append(f"  {kind[:-1]:6} {v['name']}: {v['dtype']} {v['shape']}")
    lines.append("  ops: " + ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items()))
    doc = info.get("annotations")
    if doc is None:
        lines.append("  sparsity annotation: none")
    else:
        lines.append(f"  sparsity annotation v{doc['version']}, "
                     f"{doc.get('calibration', {}).get('samples')} calibration samples:")
        for layer in doc["layers"]:
            lines.append(f"    {layer.get('module', '?'):28} {layer['op_type']:6} "
                         f"density {layer['density']:.3f}  ({layer['node']})")
    return "\n".join(lines)
