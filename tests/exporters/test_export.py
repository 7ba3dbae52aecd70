"""Exported ONNX/TFLite files: annotations round-trip, outputs match PyTorch, densities match."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import edge_runtime
from edge_runtime.annotations import ANNOTATION_KEY, parse_annotations, read_annotations
from exporters import export
from exporters.tflite_export import read_metadata
from tests.exporters.models import build

SHAPE = (1, 3, 32, 32)


def _export(tmp_path_factory, name: str, formats: tuple[str, ...]):
    torch.manual_seed(1)
    calib = torch.randn(12, *SHAPE[1:])
    out = tmp_path_factory.mktemp(name) / "bundle"
    return export(build(name), torch.randn(*SHAPE), out, calibration=calib, formats=formats,
                  golden_samples=8, labels=["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return _export(tmp_path_factory, "cnn", ("onnx", "tflite"))


@pytest.fixture(scope="module", params=["mobilenet", "vit"])
def onnx_bundle(request, tmp_path_factory):
    return _export(tmp_path_factory, request.param, ("onnx",))


def _ort_outputs(path, x, extra=()):
    model = onnx.load(path)
    for name in extra:  # expose intermediate tensors as graph outputs
        if name not in {v.name for v in model.graph.input}:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))


def _check_bundle(bundle):
    golden = np.load(bundle.golden_path)
    x, y = golden["x"], golden["y"]
    scale = max(1.0, float(np.abs(y).max()))
    model = onnx.load(bundle.onnx_path)
    onnx.checker.check_model(model)
    doc = read_annotations(model)
    assert doc is not None and doc["version"] == 1 and doc["layers"]
    session = ort.InferenceSession(str(bundle.onnx_path))
    meta = session.get_modelmeta().custom_metadata_map
    assert parse_annotations(meta[ANNOTATION_KEY]) == doc
    inputs = {layer["input"] for layer in doc["layers"]}
    got = _ort_outputs(bundle.onnx_path, x, inputs)
    assert np.abs(got[golden["output_names"][0]] - y).max() <= 1e-4 * scale
    graph_inputs = {v.name for v in model.graph.input}
    for layer in doc["layers"]:
        tensor = x if layer["input"] in graph_inputs else got[layer["input"]]
        assert abs(np.count_nonzero(tensor) / tensor.size - layer["density"]) <= 0.01, layer
    # edge_runtime reproduces PyTorch on the golden set
    session = edge_runtime.InferenceSession(str(bundle.onnx_path))
    ours = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.abs(ours - y).max() <= 1e-4 * scale
    return doc


def test_cnn_bundle_onnx(cnn):
    doc = _check_bundle(cnn)
    modules = {layer["module"]: layer for layer in doc["layers"]}
    assert set(modules) == {"conv1", "conv2", "fc1", "fc2"}
    assert modules["conv1"]["density"] == 1.0 and not modules["conv1"]["relu_fed"]
    assert modules["conv2"]["relu_fed"] and modules["conv2"]["density"] < 0.9
    assert modules["conv2"]["op_type"] == "Conv" and modules["fc2"]["op_type"] == "Gemm"


def test_cnn_manifest(cnn):
    manifest = json.loads((cnn.path / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["labels"] == ["a", "b", "c", "d"]
    assert manifest["inputs"][0]["shape"][0] == "batch"
    assert manifest["outputs"][0]["dtype"] == "float32"
    assert set(manifest["files"]) == {"model.onnx", "model.tflite", "golden.npz"}
    assert len(manifest["sparsity"]["layers"]) == 4
    assert manifest["versions"]["exporter"] == edge_runtime.__version__
    import hashlib
    digest = hashlib.sha256((cnn.path / "model.onnx").read_bytes()).hexdigest()
    assert manifest["files"]["model.onnx"]["sha256"] == digest


def test_cnn_tflite_roundtrip_and_outputs(cnn):
    from ai_edge_litert.interpreter import Interpreter

    blob = cnn.tflite_path.read_bytes()
    onnx_doc = read_annotations(onnx.load(cnn.onnx_path))
    assert parse_annotations(read_metadata(blob)) == onnx_doc
    golden = np.load(cnn.golden_path)
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale = max(1.0, float(np.abs(golden["y"]).max()))
    for x, y in zip(golden["x"], golden["y"]):
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        assert np.abs(interpreter.get_tensor(out["index"])[0] - y).max() <= 1e-4 * scale


def test_mobilenet_and_vit_onnx(onnx_bundle):
    doc = _check_bundle(onnx_bundle)
    if onnx_bundle.manifest["name"] == "ViTTiny":
        fc2 = [layer for layer in doc["layers"] if layer["module"].endswith("fc2")]
        assert len(fc2) == 2 and all(layer["op_type"] == "MatMul" and layer["relu_fed"]
                                     for layer in fc2)
    else:
        assert any(layer["module"].endswith("se.fc2") for layer in doc["layers"])


def test_torchscript_path_maps_same_modules(tmp_path):
    torch.manual_seed(2)
    calib = torch.randn(8, 12)
    bundle = export(build("mlp"), calib[:1], tmp_path / "b", calibration=calib,
                    formats=("onnx",), dynamo=False)
    doc = read_annotations(onnx.load(bundle.onnx_path))
    assert [layer["module"] for layer in doc["layers"]] == ["fc1", "fc2", "fc3"]
    assert doc["layers"][1]["relu_fed"] and doc["layers"][0]["density"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet", "vit"])
def test_tflite_mobilenet_vit(tmp_path_factory, name):
    from ai_edge_litert.interpreter import Interpreter

    bundle = _export(tmp_path_factory, name, ("onnx", "tflite"))
    blob = bundle.tflite_path.read_bytes()
    assert parse_annotations(read_metadata(blob)) == read_annotations(onnx.load(bundle.onnx_path))
    golden = np.load(bundle.golden_path)
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], golden["x"][:1])
    interpreter.invoke()
    scale = max(1.0, float(np.abs(golden["y"]).max()))
    assert np.abs(interpreter.get_tensor(out["index"]) - golden["y"][:1]).max() <= 1e-4 * scale
