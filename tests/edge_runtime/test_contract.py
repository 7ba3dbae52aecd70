"""The typed bundle contract: every tampered manifest value is refused with key, value and fix."""
from __future__ import annotations

import copy
import math

import pytest

from edge_runtime.contract import Annotations, LayerAnnotation, Manifest
from edge_runtime.errors import BundleError, InvalidModelError
from tests.edge_runtime.bundle_factory import LABELS, PRE

SHA = "a" * 64
GOOD = {"format_version": 1, "name": "m", "labels": LABELS, "preprocessing": PRE,
        "files": {"model.onnx": {"sha256": SHA, "bytes": 10}, "golden.npz": {"sha256": SHA, "bytes": 5}}}


def _with(**changes):
    doc = copy.deepcopy(GOOD)
    doc.update(changes)
    return doc


def test_valid_manifest_is_typed():
    m = Manifest.from_json(GOOD, "b/manifest.json")
    assert m.labels == tuple(LABELS) and m.preprocessing.input_size == (2, 2)
    assert [f.name for f in m.files] == ["golden.npz", "model.onnx"] and m.file("model.onnx").bytes == 10
    assert m.task == "classification" and m.raw is GOOD


@pytest.mark.parametrize("key, value, needle", [
    ("mean", [math.nan], "preprocessing.mean[0]=nan"),
    ("mean", [1e9], "preprocessing.mean[0]=1000000000.0"),
    ("std", [math.inf], "preprocessing.std[0]=inf"),
    ("std", [0.0], "preprocessing.std[0]=0.0"),
    ("std", [-1.0], "preprocessing.std[0]=-1.0"),
    ("value_range", [0, math.nan], "preprocessing.value_range[1]=nan"),
    ("input_size", [30000, 30000], "preprocessing.input_size=[30000, 30000]"),
    ("input_size", [0, 4], "preprocessing.input_size"),
    ("input_size", [2.5, 2], "preprocessing.input_size"),
    ("mean", "0.5", "preprocessing.mean='0.5'"),
])
def test_preprocessing_out_of_bounds_is_refused(key, value, needle):
    with pytest.raises(BundleError) as info:
        Manifest.from_json(_with(preprocessing={**PRE, key: value}), "b/manifest.json")
    message = str(info.value)
    assert message.startswith("b/manifest.json: ") and needle in message and "expected" in message
    assert "Re-export" in message


@pytest.mark.parametrize("label", ["ok\x1b[32m", "ok\r\nfake,row", "\x07", "", "x" * 300, 3, None])
def test_labels_must_be_printable_strings(label):
    with pytest.raises(BundleError, match=r"labels\[1\]=.*printable"):
        Manifest.from_json(_with(labels=["ok", label]))


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/passwd", "sub/model.onnx", "..", ".hidden",
                                  "model.onnx\x00", "a\\b", "manifest.json", "manifest.sig", "C:x"])
def test_file_entries_are_plain_names(name):
    files = {**GOOD["files"], name: {"sha256": SHA, "bytes": 1}}
    with pytest.raises(BundleError, match="files key=.*plain file name"):
        Manifest.from_json(_with(files=files))


@pytest.mark.parametrize("entry, needle", [
    ({"sha256": "A" * 64, "bytes": 1}, "sha256"), ({"sha256": SHA[:10], "bytes": 1}, "sha256"),
    ({"sha256": SHA, "bytes": -1}, "bytes"), ({"sha256": SHA, "bytes": True}, "bytes"),
    ({"sha256": SHA, "bytes": 1 << 50}, "bytes"), ({"sha256": SHA}, "bytes"), ("x", "files"),
])
def test_file_entries_are_strict(entry, needle):
    with pytest.raises(BundleError, match=needle):
        Manifest.from_json(_with(files={**GOOD["files"], "model.onnx": entry}))


def test_golden_and_a_model_are_required():
    with pytest.raises(BundleError, match=r"entries for \['golden.npz'\]"):
        Manifest.from_json(_with(files={"model.onnx": {"sha256": SHA, "bytes": 1}}))
    with pytest.raises(BundleError, match=r"entries for \['model.onnx'\]"):
        Manifest.from_json(_with(files={"golden.npz": {"sha256": SHA, "bytes": 1}}))


@pytest.mark.parametrize("changes, needle", [
    ({"format_version": 99}, "format_version=99"), ({"format_version": True}, "format_version=True"),
    ({"task": "regression"}, "task='regression'"), ({"name": "a\x1bb"}, "name="),
    ({"inputs": [{"name": "x"}]}, r"inputs\[0\]"), ({"labels": "ok"}, "labels='ok'"),
])
def test_other_keys(changes, needle):
    with pytest.raises(BundleError, match=needle):
        Manifest.from_json(_with(**changes))
    with pytest.raises(BundleError, match="JSON object"):
        Manifest.from_json([1, 2])


def test_annotation_density_accessor_and_errors():
    doc = {"version": 1, "producer": "p", "calibration": {"samples": 8},
           "layers": [{"node": "fc", "input": "h", "op_type": "Gemm", "density": 0.25, "module": "fc",
                       "threshold": 0.1, "thresholds": [0.1, 0.2], "relu_fed": True}]}
    ann = Annotations.from_json(doc)
    assert ann.density("fc") == 0.25 and ann.density("nope") is None and ann.samples == 8
    assert ann.layers[0] == LayerAnnotation("fc", "h", "Gemm", 0.25, "fc", 0.1, (0.1, 0.2), True)
    for bad, needle in [({"density": 1.5}, "density=1.5"), ({"density": math.nan}, "density=nan"),
                        ({"threshold": math.inf}, "threshold=inf"), ({"thresholds": []}, "thresholds=")]:
        broken = copy.deepcopy(doc)
        broken["layers"][0].update(bad)
        with pytest.raises(InvalidModelError, match=rf"layer #0 \(fc\) has {needle}"):
            Annotations.from_json(broken)
    with pytest.raises(InvalidModelError, match="version 2"):
        Annotations.from_json({**doc, "version": 2})
