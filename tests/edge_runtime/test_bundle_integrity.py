"""Attacks on a bundle's files (issue 20): each is refused, and nothing outside the bundle is opened."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_runtime import bundle as bundle_module
from edge_runtime.bundle import check_bundle, load_bundle
from edge_runtime.errors import BundleError
from edge_runtime.trust import TrustPolicy
from tests.edge_runtime.bundle_factory import LABELS, WEIGHT, OpenedPaths, classifier, edit, make_bundle, sha

DEV = TrustPolicy()  # no pinned key: unsigned bundles load with a warning


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("outside the bundle")
    return path


def _problems(path: Path) -> str:
    return " ".join(p.message() for p in check_bundle(path, trust=DEV)[1])


def test_intact_bundle_loads_with_an_unsigned_warning(bundle, caplog):
    loaded = load_bundle(bundle, trust=DEV)
    assert loaded.verified and loaded.labels == LABELS and loaded.spec.preprocessing.mean == (0.5,)
    assert loaded.trust.signer is None and "NOT signed" in caplog.text


@pytest.mark.parametrize("change", [{"labels": ["defect", "ok", "scratch"]},
                                    {"preprocessing": {"input_size": [2, 2], "channel_order": "L",
                                                       "mean": [0.9], "std": [0.25]}},
                                    {"files": {}}])
def test_manifest_edits_fail_its_digest(bundle, change):
    if change.get("files") == {}:  # drop golden.npz from the list (was: PASSED with a warning)
        files = json.loads((bundle / "manifest.json").read_text())["files"]
        change = {"files": {"model.onnx": files["model.onnx"], "golden.npz": files["golden.npz"]},
                  "name": "x"}
    edit(bundle, **change)
    with pytest.raises(BundleError, match="manifest.json fails its checksum.*modified after export"):
        load_bundle(bundle, trust=DEV)


def test_missing_manifest_digest_is_refused_for_unsigned_bundles(bundle):
    (bundle / "manifest.sha256").unlink()
    with pytest.raises(BundleError, match="manifest.sha256 is missing"):
        load_bundle(bundle, trust=DEV)


@pytest.mark.parametrize("name", ["model.onnx", "golden.npz", "manifest.json"])
def test_one_byte_change_of_any_file_names_the_file(bundle, name):
    path = bundle / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name} fails its checksum"):
        load_bundle(bundle, trust=DEV)


@pytest.mark.parametrize("entry", ["../secret.txt", "SECRET_ABS"])
def test_file_entries_outside_the_bundle_are_never_opened(bundle, secret, entry):
    entry = str(secret) if entry == "SECRET_ABS" else entry
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    edit(bundle, reseal=True, files={**files, entry: sha(secret)})
    with OpenedPaths() as opened, pytest.raises(BundleError, match="plain file name") as info:
        load_bundle(bundle, trust=DEV)
    assert not any("secret" in p for p in opened.paths)
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in str(info.value)


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_links_out_of_the_bundle_are_refused_unopened(bundle, secret, kind):
    secret.write_bytes((bundle / "model.onnx").read_bytes())  # same content: only the link type tells
    (bundle / "model.onnx").unlink()
    (os.symlink if kind == "symlink" else os.link)(secret, bundle / "model.onnx")
    with OpenedPaths() as opened:
        problems = _problems(bundle)
    expected = "is a symlink" if kind == "symlink" else "has 2 hard links"
    assert expected in problems and "model.onnx" in problems
    assert not any("secret" in p for p in opened.paths)
    if kind == "symlink":
        assert not any(p.endswith("model.onnx") for p in opened.paths)


def test_symlinked_manifest_is_refused(bundle, secret):
    secret.write_bytes((bundle / "manifest.json").read_bytes())
    (bundle / "manifest.json").unlink()
    os.symlink(secret, bundle / "manifest.json")
    with pytest.raises(BundleError, match="manifest .* is a symlink"):
        load_bundle(bundle, trust=DEV)


def test_fifo_and_directories_are_refused_without_blocking(bundle):
    (bundle / "model.onnx").unlink()
    os.mkfifo(bundle / "model.onnx")  # opening it for reading would block forever
    (bundle / "extra").mkdir()
    problems = _problems(bundle)
    assert "model.onnx' is not a regular file" in problems
    assert "'extra' is in the bundle directory but not listed" in problems


def test_unlisted_file_is_refused(bundle):
    (bundle / "payload.so").write_bytes(b"\x7fELF")
    with pytest.raises(BundleError, match="'payload.so' is in the bundle directory but not listed"):
        load_bundle(bundle, trust=DEV)


def test_huge_sparse_file_is_refused_by_size_before_hashing(bundle, monkeypatch):
    with open(bundle / "model.onnx", "r+b") as handle:
        handle.truncate(8 << 30)  # 8 GB, sparse: costs no disk
    hashed = []
    real = hashlib.sha256

    class Counting:
        def __init__(self):
            self._h = real()

        def update(self, data):
            hashed.append(len(data))
            self._h.update(data)

        def hexdigest(self):
            return self._h.hexdigest()

    monkeypatch.setattr(bundle_module.hashlib, "sha256", lambda *a: Counting())
    problems = _problems(bundle)
    assert f"model.onnx has {8 << 30} bytes, the manifest declares" in problems
    assert sum(hashed) < (1 << 20)  # golden.npz and the manifest only


def test_truncated_file_reports_size_and_both_hashes(bundle):
    expected = sha(bundle / "model.onnx")
    with open(bundle / "model.onnx", "r+b") as handle:
        handle.truncate(10)
    problems = _problems(bundle)
    actual = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    assert f"size 10 bytes, expected {expected['bytes']}" in problems
    assert expected["sha256"] in problems and actual in problems


def test_missing_listed_file(bundle):
    (bundle / "golden.npz").unlink()
    with pytest.raises(BundleError, match="golden.npz is listed in .* but missing"):
        load_bundle(bundle, trust=DEV)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="is not a directory"):
        load_bundle(tmp_path / "nope", trust=DEV)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="has no manifest.json"):
        load_bundle(tmp_path / "empty", trust=DEV)
    make_bundle(tmp_path / "b")
    (tmp_path / "b" / "manifest.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(BundleError, match="manifest.json fails its checksum"):
        load_bundle(tmp_path / "b", trust=DEV)
    (tmp_path / "b" / "manifest.sha256").unlink()
    with pytest.raises(BundleError, match="manifest.sha256 is missing"):
        load_bundle(tmp_path / "b", trust=DEV)


def _swap_model(bundle: Path, scale: float) -> None:
    """Replace model.onnx (a new file renamed over it, one link) by the classifier with its weights
    scaled: the same size for a scale that keeps every float's encoding length, as raw data does."""
    model = classifier()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(WEIGHT * scale, "W"))
    tmp = bundle / ".swap"
    onnx.save(model, tmp)
    os.replace(tmp, bundle / "model.onnx")


@pytest.mark.parametrize("extra", [False, True])
def test_a_model_replaced_after_the_check_is_refused_when_read(bundle, extra):
    """The window between the check and the session's read is closed: the session gets the model's
    bytes read once and checked as read, never the file by its path."""
    loaded = load_bundle(bundle, trust=DEV)
    _swap_model(bundle, -1.0)
    if extra:  # a different size is refused before the file is read whole
        with open(bundle / "model.onnx", "ab") as handle:
            handle.write(b"\0" * 16)
    with pytest.raises(BundleError, match="model.onnx (changed|has .* bytes).* after the bundle was checked"):
        loaded.read_model(loaded.require_onnx())


def test_a_bundle_runs_the_bytes_it_checked(bundle, tmp_path, monkeypatch):
    """BundleRunner's session is built from the checked bytes: a model swapped right after
    load_bundle stops it with the bundle's error; an intact bundle runs its own weights."""
    from edge_runtime.validation import run as run_module

    real = run_module.load_bundle

    def racing(path, **kwargs):
        loaded = real(path, **kwargs)
        _swap_model(Path(path), 2.0)
        return loaded

    monkeypatch.setattr(run_module, "load_bundle", racing)
    with pytest.raises(BundleError, match="model.onnx changed after the bundle was checked"):
        run_module.BundleRunner(bundle, threads=1, trust=DEV)
    monkeypatch.setattr(run_module, "load_bundle", real)
    runner = run_module.BundleRunner(make_bundle(tmp_path / "intact"), threads=1, trust=DEV)
    x = np.ones((1, 1, 2, 2), np.float32)
    np.testing.assert_allclose(runner.session.run(None, {"x": x})[0], x.reshape(1, 4) @ WEIGHT.T, rtol=1e-6)


@pytest.mark.parametrize("swapped", ["model.onnx", "golden.npz"])
def test_validate_judges_the_files_it_checked(bundle, monkeypatch, swapped):
    """validate reads golden.npz and hands every runtime the model as checked: a file replaced
    between the checks and its use stops the run with the bundle's error instead of a verdict on
    files that were never checked."""
    from edge_runtime.validation import validate as validate_module

    real = validate_module.check_bundle

    def racing(path, **kwargs):
        checked = real(path, **kwargs)
        if swapped == "model.onnx":
            _swap_model(Path(path), 2.0)
        else:
            x = np.zeros((4, 1, 2, 2), np.float32)
            np.savez(Path(path) / ".swap.npz", x=x, y=np.zeros((4, 3), np.float32))
            os.replace(Path(path) / ".swap.npz", Path(path) / "golden.npz")
        return checked

    monkeypatch.setattr(validate_module, "check_bundle", racing)
    with pytest.raises(BundleError, match=f"{swapped} (changed|has .* bytes).* after the bundle was checked"):
        validate_module.validate_bundle(bundle, backends=["edge"], trust=DEV, threads=1)
