"""Ed25519 signatures: pinned keys from flag, environment and config; every refusal names key and file."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle import load_bundle
from edge_runtime.errors import BundleError, InvalidArgumentError
from edge_runtime.trust import KEYS_ENV, PublicKey, TrustPolicy, generate_keys
from tests.edge_runtime.bundle_factory import edit, make_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_user_keys(monkeypatch, tmp_path):
    """Tests never see the developer's own pinned keys."""
    monkeypatch.delenv(KEYS_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return generate_keys(folder, "build"), generate_keys(folder, "other")


@pytest.fixture
def signed(tmp_path, keys):
    (private, _), _ = keys
    return make_bundle(tmp_path / "signed", sign_key=private)


def _pinned(public: Path, **kwargs) -> TrustPolicy:
    return TrustPolicy.from_sources([public], **kwargs)


def test_generated_private_key_is_0600_and_never_overwritten(keys):
    (private, public), _ = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(InvalidArgumentError, match="already exists"):
        generate_keys(private.parent, "build")


def test_signed_bundle_verifies_with_its_pinned_key(signed, keys):
    (_, public), _ = keys
    loaded = load_bundle(signed, trust=_pinned(public))
    assert loaded.trust.signer == PublicKey.load(public).key_id and loaded.trust.warning is None
    (signed / "manifest.sha256").unlink()  # the signature covers the manifest on its own
    assert load_bundle(signed, trust=_pinned(public)).verified


def test_signer_not_pinned_is_refused(signed, keys):
    (_, public), (_, other) = keys
    signer = PublicKey.load(public).key_id
    for policy in (TrustPolicy(), _pinned(other)):
        with pytest.raises(BundleError, match=rf"manifest.sig: signed by key {signer}, which is not among "
                                              r"the trusted keys .*--trusted-key"):
            load_bundle(signed, trust=policy)
    assert load_bundle(signed, trust=_pinned(other, allow_unsigned=True)).trust.signer is None


@pytest.mark.parametrize("change", ["labels", "mean", "golden", "task"])
def test_resealed_edits_fail_the_signature(signed, keys, change):
    """An attacker can rewrite manifest.sha256 but cannot re-sign: every edit is caught."""
    (_, public), _ = keys
    manifest = json.loads((signed / "manifest.json").read_text())
    if change == "labels":
        edit(signed, reseal=True, labels=["defect", "ok", "scratch"])
    elif change == "mean":
        edit(signed, reseal=True, preprocessing={**manifest["preprocessing"], "mean": [0.9]})
    elif change == "task":  # the signature is checked on the bytes, before the contract reads the task
        edit(signed, reseal=True, task="detection", postprocess={"output": "logits", "layout": "yolo_obj"})
    else:
        files = {**manifest["files"]}
        files.pop("golden.npz")
        edit(signed, reseal=True, files={**files, "golden.npz": {"sha256": "0" * 64, "bytes": 1}})
    for allow in (False, True):  # a bad signature by a pinned key is never let through
        with pytest.raises(BundleError, match=r"manifest.json does not match its signature by trusted key "
                                              rf"{PublicKey.load(public).key_id} \(.*build.pub\)"):
            load_bundle(signed, trust=_pinned(public, allow_unsigned=allow))


def test_one_byte_change_of_a_signed_file_names_it(signed, keys):
    (_, public), _ = keys
    data = bytearray((signed / "model.onnx").read_bytes())
    data[-5] ^= 0x80
    (signed / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx fails its checksum"):
        load_bundle(signed, trust=_pinned(public))


def test_malformed_signature(signed, keys):
    (_, public), _ = keys
    (signed / "manifest.sig").write_text('{"algorithm": "rsa", "key_id": "x", "signature": "AAAA"}')
    with pytest.raises(BundleError, match="manifest.sig has algorithm='rsa'"):
        load_bundle(signed, trust=_pinned(public))
    (signed / "manifest.sig").write_text("garbage")
    with pytest.raises(BundleError, match="manifest.sig is malformed"):
        load_bundle(signed, trust=_pinned(public))


def test_unsigned_bundle_policy(tmp_path, keys, caplog):
    (_, public), _ = keys
    bundle = make_bundle(tmp_path / "unsigned")
    assert load_bundle(bundle, trust=TrustPolicy()).trust.warning  # development: a warning
    assert "NOT signed" in caplog.text and "no trusted key is pinned" in caplog.text
    with pytest.raises(BundleError, match="is not signed .* trusted keys are pinned .*--allow-unsigned"):
        load_bundle(bundle, trust=_pinned(public))
    assert "--allow-unsigned" in load_bundle(bundle, trust=_pinned(public, allow_unsigned=True)).trust.warning


def test_keys_from_environment_and_config_dir(signed, keys, monkeypatch, tmp_path):
    (_, public), (_, other) = keys
    monkeypatch.setenv(KEYS_ENV, f"{other}{os.pathsep}{public}")
    assert load_bundle(signed).trust.signer == PublicKey.load(public).key_id  # default policy
    monkeypatch.delenv(KEYS_ENV)
    with pytest.raises(BundleError, match="not among the trusted keys"):
        load_bundle(signed)
    config = tmp_path / "config" / "edge-runtime" / "trusted_keys"
    config.mkdir(parents=True)
    (config / "line1.pub").write_bytes(public.read_bytes())
    assert load_bundle(signed).trust.signer == PublicKey.load(public).key_id


def test_bad_key_files(tmp_path, keys):
    (private, _), _ = keys
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(BundleError, match="trusted key .*bad.pub.* cannot be read"):
        TrustPolicy.from_sources([tmp_path / "bad.pub"])
    with pytest.raises(BundleError, match="cannot be read"):
        TrustPolicy.from_sources([tmp_path / "missing.pub"])
    with pytest.raises(InvalidArgumentError, match="--sign-key .* cannot be read"):
        make_bundle(tmp_path / "b", sign_key=tmp_path / "bad.pub")


def _cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *argv], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


def test_cli_keys_validate_and_refusals(tmp_path, keys):
    out = _cli("keys", "generate", "--out", str(tmp_path / "k"))
    assert out.returncode == 0 and "key id" in out.stdout
    assert stat.S_IMODE((tmp_path / "k" / "edge-runtime.key").stat().st_mode) == 0o600
    (private, public), _ = keys
    bundle = make_bundle(tmp_path / "b", sign_key=private)
    ok = _cli("validate", str(bundle), "--backends", "edge", "--no-progress", "--trusted-key", str(public))
    assert ok.returncode == 0, ok.stderr
    refused = _cli("validate", str(bundle), "--backends", "edge", "--no-progress")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "not among the trusted keys" in refused.stderr
    unsigned = make_bundle(tmp_path / "u")
    run = _cli("validate", str(unsigned), "--backends", "edge", "--no-progress", "--trusted-key", str(public))
    assert run.returncode == 2 and "--allow-unsigned" in run.stderr
    allowed = _cli("validate", str(unsigned), "--backends", "edge", "--no-progress", "--allow-unsigned")
    assert allowed.returncode == 0 and "NOT signed" in allowed.stderr


def test_profile_and_warmup_check_a_bundle_as_run_does(signed, keys, tmp_path):
    """Both open a bundle's model: its signature and files are checked first, and what runs is the
    bytes the checks read (before, `profile` ran a bundle directory's files unchecked)."""
    from edge_runtime.profiling import profile_model
    from edge_runtime.profiling.inputs import model_files
    from edge_runtime.warmup import _model_path

    (_, public), (_, other) = keys
    files = model_files(signed, _pinned(public))
    assert files.checked is not None and files.input_name == "x"
    result = profile_model(signed, backends=("onnxruntime",), runs=1, warmup=0, progress=False,
                           trust=_pinned(public))
    assert "golden" in result.input
    assert _model_path(signed, _pinned(public))[0] == signed / "model.onnx"
    for call in (lambda trust: profile_model(signed, backends=("onnxruntime",), runs=1, warmup=0, progress=False,
                                             trust=trust),
                 lambda trust: _model_path(signed, trust)):
        with pytest.raises(BundleError, match="not among the trusted keys"):
            call(_pinned(other))
    model = signed / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")  # one byte changed after signing
    with pytest.raises(BundleError, match="model.onnx"):
        profile_model(signed, backends=("onnxruntime",), runs=1, warmup=0, progress=False, trust=_pinned(public))
    with pytest.raises(BundleError, match="model.onnx"):
        _model_path(signed, _pinned(public))


def test_cli_profile_and_warmup_take_the_trust_flags(tmp_path, keys):
    (_, public), _ = keys
    unsigned = make_bundle(tmp_path / "u")
    for command in (("profile", str(unsigned), "--backend", "onnxruntime", "--runs", "1", "--no-progress"),
                    ("warmup", str(unsigned))):
        refused = _cli(*command, "--trusted-key", str(public))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and "--allow-unsigned" in refused.stderr, refused.stderr
    allowed = _cli("profile", str(unsigned), "--backend", "onnxruntime", "--runs", "1", "--warmup", "0",
                   "--no-progress", "--trusted-key", str(public), "--allow-unsigned")
    assert allowed.returncode == 0 and "NOT signed" in allowed.stderr, allowed.stderr
