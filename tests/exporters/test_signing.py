"""export(sign_key=...) / --sign-key, the manifest written through the contract, inspect on tampering."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import helper

from edge_runtime.bundle import load_bundle
from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.inspect import inspect_path, render
from edge_runtime.trust import KEYS_ENV, PublicKey, TrustPolicy, generate_keys
from exporters import export
from tests.exporters.models import build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_user_keys(monkeypatch, tmp_path):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("keys"))


def _export(out, **kwargs):
    torch.manual_seed(0)
    calib = torch.randn(8, 12)
    return export(build("mlp"), calib[:1], out, calibration=calib, formats=("onnx",), **kwargs)


def test_signed_export_verifies_and_inspect_names_the_signer(tmp_path, keypair, monkeypatch):
    private, public = keypair
    bundle = _export(tmp_path / "b", sign_key=private, labels=["a", "b", "c", "d"])
    assert sorted(p.name for p in bundle.path.iterdir()) == [
        "golden.npz", "manifest.json", "manifest.sha256", "manifest.sig", "model.onnx"]
    loaded = load_bundle(bundle.path, trust=TrustPolicy.from_sources([public]))
    key = PublicKey.load(public).key_id
    assert loaded.trust.signer == key and bundle.spec.labels == ("a", "b", "c", "d")
    info = inspect_path(bundle.path)  # the key is not pinned here: shown as unsigned, no error
    assert info["integrity"] == [] and info["unsupported_ops"] == []
    monkeypatch.setenv(KEYS_ENV, str(public))
    assert inspect_path(bundle.path)["signer"] == key and f"key {key}" in render(inspect_path(bundle.path))


def test_bad_sign_key_fails_before_exporting(tmp_path):
    (tmp_path / "k").write_text("nope")
    with pytest.raises(InvalidArgumentError, match="--sign-key"):
        _export(tmp_path / "b", sign_key=tmp_path / "k")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("labels, needle", [(["ok", "de\x1b[31mfect"], r"labels\[1\]"),
                                            (["ok\r\n=cmd()"], r"labels\[0\]")])
def test_export_refuses_unprintable_labels(tmp_path, labels, needle):
    with pytest.raises(BundleError, match=needle):
        _export(tmp_path / "b", labels=labels)
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())


def test_inspect_exits_1_on_a_tampered_bundle_and_lists_missing_ops(tmp_path):
    bundle = _export(tmp_path / "b")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["labels"] = ["x"]
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "inspect", str(bundle.path)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 1 and "INTEGRITY: manifest.json fails its checksum" in out.stdout
    model = onnx.load(bundle.onnx_path)
    model.graph.node.append(helper.make_node("NoSuchOp", ["x"], ["z"], domain="com.example", name="odd"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(model, tmp_path / "odd.onnx")
    info = inspect_path(tmp_path / "odd.onnx")
    assert info["unsupported_ops"] == ["com.example::NoSuchOp"] and "lacks: com.example::NoSuchOp" in render(info)


def test_cli_export_sign_key_then_validate_with_trusted_key(tmp_path, keypair):
    private, public = keypair
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "export", "tests.exporters.models:SmallCNN",
                          "--input-shape", "1,3,32,32", "--out", str(tmp_path / "b"), "--formats", "onnx",
                          "--labels", "a,b,c,d", "--sign-key", str(private)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "b" / "manifest.sig").is_file()
    ok = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "validate", str(tmp_path / "b"), "--backends",
                         "edge", "--no-progress", "--trusted-key", str(public)],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "NOT signed" not in ok.stderr
