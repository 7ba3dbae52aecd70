"""Describe a bundle directory or an .onnx file without importing torch.

Used by ``edge-runtime inspect``: inputs, outputs (symbolic dims by name), op counts and the
ops this runtime lacks (subgraphs of If/Loop/Scan included), the sparsity annotation, and for a bundle the manifest, its
signature and its integrity problems (``inspect`` exits 1 when there are any), as a dict
(``--json``) or as text.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import onnx

from edge_runtime.annotations import read_annotations
from edge_runtime.errors import BundleError, EdgeRuntimeError, InvalidArgumentError
from edge_runtime.onnx_io import load_model_proto, proto_nodes


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Summarise a bundle directory (with ``manifest.json``) or an ``.onnx`` file.

    Args:
        path: a bundle directory or an ONNX file.

    Returns:
        ``{"path", "manifest" (or None), "signer" (key id or None), "integrity" (problem
        messages, empty when intact), "inputs", "outputs", "op_counts", "unsupported_ops",
        "opset", "annotations" (or None), "int8" (the bundle's int8 model: its name, op counts,
        lacking ops, opsets and annotation, and under "tflite" the int8 TFLite model's manifest entry
        with its size, run by the ``litert-int8`` backend; None without one)}``.

    Raises:
        InvalidArgumentError: the path does not exist.
        BundleError: a bundle's manifest is unreadable or invalid, a pinned key's signature
            fails, or it has no model.onnx.
        InvalidModelError: the ONNX file cannot be parsed or its annotation is invalid.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidArgumentError(f"{str(path)!r} does not exist; pass a bundle directory "
                                   "or an .onnx file.")
    manifest, signer, integrity, int8_info = None, None, [], None
    model_path = path
    if path.is_dir():
        from edge_runtime.bundle import check_bundle
        from edge_runtime.trust import TrustPolicy

        pinned = TrustPolicy.from_sources()
        bundle, problems = check_bundle(path, trust=TrustPolicy(pinned.keys, allow_unsigned=True))
        manifest, integrity = bundle.manifest, [p.message() for p in problems]
        signer = bundle.trust.signer if bundle.trust else None
        if any(p.name == "model.onnx" for p in problems):
            return {"path": str(path), "manifest": manifest, "signer": signer, "integrity": integrity,
                    "inputs": [], "outputs": [], "op_counts": {}, "unsupported_ops": [], "opset": {},
                    "annotations": None, "int8": None}
        model_path = bundle.require_onnx()
        int8 = bundle.int8_path
        if int8 is not None and not any(p.name == int8.name for p in problems):
            int8_info = {"model": int8.name, **_model_info(load_model_proto(int8, external_data=False)),
                         "tflite": _int8_tflite(bundle)}
    model = load_model_proto(model_path, external_data=False)
    return {"path": str(path), "manifest": manifest, "signer": signer, "integrity": integrity,
            "inputs": _values(model.graph.input, model), "outputs": _values(model.graph.output, model),
            **_model_info(model), "int8": int8_info}


def _int8_tflite(bundle: Any) -> dict[str, Any] | None:
    """The manifest's ``int8.tflite`` entry with the model's size (read from the manifest: no LiteRT needed)."""
    path = bundle.int8_tflite_path
    if path is None:
        return None
    entry = bundle.spec.file(path.name)
    return {**bundle.manifest["int8"]["tflite"], "bytes": entry.bytes if entry else None, "backend": "litert-int8"}


def _model_info(model: onnx.ModelProto) -> dict[str, Any]:
    """Op counts, the ops this runtime lacks, opsets and the sparsity annotation of one model."""
    nodes = list(proto_nodes(model.graph))  # If/Loop/Scan bodies counted and checked too
    return {"op_counts": dict(sorted(collections.Counter(n.op_type for n in nodes).items())),
            "unsupported_ops": _unsupported(model),
            "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "annotations": read_annotations(model)}


def _unsupported(model: onnx.ModelProto) -> list[str]:
    """``domain::op_type`` of every op this runtime cannot run at the model's opset."""
    from edge_runtime.ops import registry

    opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
    missing = set()
    for node in proto_nodes(model.graph):
        try:
            registry.resolve(node.domain, node.op_type, opsets.get(node.domain, 1))
        except EdgeRuntimeError:
            missing.add(f"{node.domain + '::' if node.domain else ''}{node.op_type}")
    return sorted(missing)


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
                    "shape": [_dim(d) for d in tensor.shape.dim]})
    return out


def _dim(dim: Any) -> int | str:
    """A dimension: its size, its symbolic name, or "?" when the model leaves it unknown."""
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return dim.dim_param or "?"


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
        lines.append(f"  task: {_task_line(manifest)}")
        signer = info.get("signer")
        lines.append(f"  signature: {'Ed25519, key ' + signer if signer else 'none (unsigned or unpinned key)'}")
        lines += [f"  INTEGRITY: {p}" for p in info.get("integrity", [])]
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            lines.append(f"  {kind[:-1]:6} {v['name']}: {v['dtype']} {v['shape']}")
    lines.append("  ops: " + ", ".join(f"{k} x{v}" for k, v in info["op_counts"].items()))
    if info.get("unsupported_ops"):
        lines.append("  ops edge_runtime lacks: " + ", ".join(info["unsupported_ops"]))
    lines += _annotation_lines(info.get("annotations"))
    int8 = info.get("int8")
    if int8:
        lines.append(f"  int8 model {int8['model']}: " + ", ".join(f"{k} x{v}" for k, v in int8["op_counts"].items()))
        if int8.get("unsupported_ops"):
            lines.append("    ops edge_runtime lacks: " + ", ".join(int8["unsupported_ops"]))
        lines += ["  " + line for line in _annotation_lines(int8.get("annotations"))]
        tfl = int8.get("tflite")
        if tfl:
            lines.append(f"  int8 TFLite model {tfl['model']} ({tfl.get('bytes')} bytes, {tfl.get('quantizer', '?')}; "
                         f"backend litert-int8, checked against {tfl['golden']} at atol {tfl['golden_atol']:g}, "
                         f"max abs vs fp32 {tfl.get('max_abs_vs_fp32', '?')})")
    return "\n".join(lines)


def _annotation_lines(doc: dict[str, Any] | None) -> list[str]:
    """The annotation's layers, one line each (int8 models: with the input's zero point)."""
    if doc is None:
        return ["  sparsity annotation: none"]
    lines = [f"  sparsity annotation v{doc['version']}, {doc.get('calibration', {}).get('samples')} calibration "
             f"samples:"]
    for layer in doc["layers"]:
        zp = f"  zero point {layer['zero_point']}" if layer.get("zero_point") is not None else ""
        lines.append(f"    {layer.get('module', '?'):28} {layer['op_type']:6} "
                     f"density {layer['density']:.3f}{zp}  ({layer['node']})")
    return lines


def _task_line(manifest: dict[str, Any]) -> str:
    """``detection (yolo, score > 0.25, NMS IoU 0.45, 2 classes)`` etc. (the manifest was checked)."""
    task, post = manifest.get("task") or "classification", manifest.get("postprocess") or {}
    if task == "detection":
        return (f"detection ({post.get('layout', 'yolo')} from {post.get('output')!r}, score > "
                f"{post.get('score_threshold', 0.25):g}, NMS IoU {post.get('iou_threshold', 0.45):g}, "
                f"{len(post.get('classes') or [])} classes)")
    if task == "segmentation":
        return f"segmentation ({post.get('format', 'logits')} from {post.get('output')!r})"
    if task == "anomaly":
        fpr = post.get("measured_fpr")
        fitted = f", false-positive rate {fpr:g} on {post.get('calibration_images')} good images" \
            if fpr is not None else ""
        return f"anomaly (map {post.get('map_output')!r}, threshold {post.get('threshold'):g}{fitted})"
    return task
