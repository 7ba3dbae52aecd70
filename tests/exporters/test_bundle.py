"""Bundle writing: atomic, overwrite protection, nothing left after a failure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.inspect import inspect_path, render
from exporters import ExportError, export
from tests.exporters.models import DataDependent, build


def _export(out, **kwargs):
    torch.manual_seed(0)
    calib = torch.randn(8, 12)
    return export(build("mlp"), calib[:1], out, calibration=calib, formats=("onnx",),
                  **kwargs)


def test_overwrite_protection_and_replace(tmp_path):
    out = tmp_path / "bundle"
    first = _export(out, name="first")
    with pytest.raises(BundleError, match="already exists"):
        _export(out)
    assert first.manifest["name"] == "first"
    second = _export(out, overwrite=True, name="second")
    assert second.manifest["name"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp dirs left
    golden = np.load(second.golden_path)
    assert golden["x"].shape == (8, 12) and list(golden["output_names"]) == \
        [o["name"] for o in second.manifest["outputs"]]


def test_failed_export_leaves_nothing(tmp_path):
    with pytest.raises(ExportError, match="DataDependent"):
        export(DataDependent().eval(), torch.randn(1, 4), tmp_path / "bad", formats=("onnx",))
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_bundle(tmp_path):
    out = tmp_path / "bundle"
    _export(out, name="kept")
    with pytest.raises(ExportError):
        export(DataDependent().eval(), torch.randn(1, 4), out, formats=("onnx",),
               overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert '"kept"' in (out / "manifest.json").read_text()


def test_bad_formats(tmp_path):
    with pytest.raises(InvalidArgumentError, match="unknown"):
        export(build("mlp"), torch.randn(1, 12), tmp_path / "b", formats=("coreml",))
    assert not (tmp_path / "b").exists()


def test_inspect_bundle_and_model(tmp_path):
    bundle = _export(tmp_path / "bundle")
    info = inspect_path(bundle.path)
    assert info["manifest"]["name"] == "MLP"
    assert info["annotations"]["layers"][1]["module"] == "fc2"
    assert info["op_counts"]["Gemm"] == 3
    assert info["inputs"][0]["shape"][0] == "batch"
    text = render(info)
    assert "fc2" in text and "Gemm" in text
    assert inspect_path(bundle.onnx_path)["manifest"] is None
