"""Torch-free bundles for the trust tests: the exporter's format, written in milliseconds.

``make_bundle`` writes what ``exporters.export`` writes (docs/bundle.md): model.onnx (a
2x2 grayscale classifier, Flatten -> Gemm), golden.npz, manifest.json through the typed
contract, manifest.sha256, and manifest.sig when given a key. ``reseal`` rewrites the
digest (and signature) after a test edits the manifest, as an attacker holding the key
(or facing an unsigned bundle) could.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.bundle import manifest_digest
from edge_runtime.contract import Manifest

LABELS = ["ok", "defect", "scratch"]
PRE = {"input_size": [2, 2], "resize": "bilinear", "channel_order": "L", "value_range": [0, 1],
       "mean": [0.5], "std": [0.25], "layout": "NCHW"}
WEIGHT = np.arange(12, dtype=np.float32).reshape(3, 4) / 10 - 0.5  # (classes, pixels)


def classifier() -> onnx.ModelProto:
    """x (N, 1, 2, 2) -> flatten -> Gemm (4 -> 3) -> logits (N, 3)."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "W", "B"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(np.zeros(3, np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def sha(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def make_bundle(folder: Path, *, sign_key: Path | None = None, **changes: Any) -> Path:
    """Write a valid bundle into ``folder``; ``changes`` override manifest keys (unchecked)."""
    x = np.random.default_rng(0).normal(size=(4, 1, 2, 2)).astype(np.float32)
    return write_bundle(folder, classifier(), x, x.reshape(4, 4) @ WEIGHT.T, name="Classifier",
                        shapes=(["batch", 1, 2, 2], ["batch", 3]), names=("x", "logits"), preprocessing=PRE,
                        labels=LABELS, sign_key=sign_key, **changes)


def write_bundle(folder: Path, model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, *, name: str,
                 shapes: tuple[list[Any], list[Any]], names: tuple[str, str], preprocessing: Any = None,
                 labels: Any = None, sign_key: Path | None = None, **changes: Any) -> Path:
    """A bundle of a one-input, one-output float32 ``model`` with golden ``x`` -> ``y``, as the exporter
    writes it; ``changes`` override manifest keys (unchecked)."""
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    np.savez(folder / "golden.npz", x=x, y=y, y_0=y, output_names=np.array([names[1]]))
    manifest = {"format_version": 1, "name": name,
                "inputs": [{"name": names[0], "shape": shapes[0], "dtype": "float32"}],
                "outputs": [{"name": names[1], "shape": shapes[1], "dtype": "float32"}],
                "preprocessing": preprocessing, "labels": labels, "sparsity": None,
                "files": {n: sha(folder / n) for n in ("golden.npz", "model.onnx")},
                "versions": {"onnx": onnx.__version__}, "created_at": "2026-12-03T00:00:00+00:00"}
    if not changes:
        Manifest.from_json(manifest)
    manifest.update(changes)
    write_manifest(folder, manifest, sign_key)
    return folder


def write_manifest(folder: Path, manifest: dict[str, Any], sign_key: Path | None = None) -> None:
    """Write manifest.json, manifest.sha256 and (with a key) manifest.sig, as the exporter does."""
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    (folder / "manifest.json").write_bytes(data)
    (folder / "manifest.sha256").write_text(manifest_digest(data))
    if sign_key is not None:
        from edge_runtime.trust import sign_manifest

        (folder / "manifest.sig").write_bytes(sign_manifest(data, sign_key))


def edit(folder: Path, *, reseal: bool = False, sign_key: Path | None = None, **changes: Any) -> None:
    """Change manifest keys; ``reseal`` rewrites manifest.sha256 (and re-signs with ``sign_key``)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    if reseal:
        write_manifest(folder, manifest, sign_key)
    else:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


class OpenedPaths:
    """Every path opened (``open`` audit event: builtins.open, os.open, io) while active."""

    _active: list[OpenedPaths] = []
    _installed = False

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __enter__(self) -> OpenedPaths:
        if not OpenedPaths._installed:
            sys.addaudithook(OpenedPaths._hook)
            OpenedPaths._installed = True
        OpenedPaths._active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        OpenedPaths._active.remove(self)

    @staticmethod
    def _hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and OpenedPaths._active and isinstance(args[0], (str, bytes, Path)):
            for watcher in OpenedPaths._active:
                watcher.paths.append(str(Path(args[0].decode() if isinstance(args[0], bytes) else args[0])))

    def outside(self, folder: Path) -> list[str]:
        """Opened paths that are not inside ``folder`` (after resolving it)."""
        root = str(folder.resolve())
        return [p for p in self.paths if not str(Path(p).resolve()).startswith(root + "/")]
