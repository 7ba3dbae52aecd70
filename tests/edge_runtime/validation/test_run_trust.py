"""`run` on tampered and signed bundles: refused with one line and exit 2, before any image is read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime.trust import KEYS_ENV, generate_keys
from tests.edge_runtime.bundle_factory import PRE, edit, make_bundle

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.array([[0, 255], [128, 64]], np.uint8)).save(path)
    return path


def _run(*argv: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop(KEYS_ENV, None)
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    lines = [line for line in out.stderr.splitlines() if not line.startswith("WARNING")]
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    return lines[0]


def test_unsigned_bundle_runs_with_a_warning(tmp_path, image):
    out = _run(str(make_bundle(tmp_path / "b")), str(image), tmp_path=tmp_path)
    assert out.returncode == 0 and "NOT signed" in out.stderr
    assert out.stdout.split("\t")[1] in ("ok", "defect", "scratch")


@pytest.mark.parametrize("change, needle", [
    ({"labels": ["ok", "\x1b[32mok\x1b[0m", "scratch"]}, r"labels[1]="),
    ({"preprocessing": {**PRE, "mean": [float("nan")]}}, "preprocessing.mean[0]=nan"),
    ({"preprocessing": {**PRE, "std": [float("inf")]}}, "preprocessing.std[0]=inf"),
    ({"preprocessing": {**PRE, "input_size": [30000, 30000]}}, "preprocessing.input_size=[30000, 30000]"),
])
def test_resealed_unsigned_tampering_is_still_refused_by_the_contract(tmp_path, image, change, needle):
    bundle = make_bundle(tmp_path / "b")
    edit(bundle, reseal=True, **change)
    assert needle in _one_error_line(_run(str(bundle), str(image), tmp_path=tmp_path))


def test_tampered_labels_fail_the_digest(tmp_path, image):
    bundle = make_bundle(tmp_path / "b")
    edit(bundle, labels=["defect", "ok", "scratch"])
    assert "manifest.json fails its checksum" in _one_error_line(_run(str(bundle), str(image), tmp_path=tmp_path))


def test_signed_bundle_run_needs_the_pinned_key(tmp_path, image):
    private, public = generate_keys(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "b", sign_key=private)
    assert _run(str(bundle), str(image), "--trusted-key", str(public), tmp_path=tmp_path).returncode == 0
    assert "not among the trusted keys" in _one_error_line(_run(str(bundle), str(image), tmp_path=tmp_path))
    edit(bundle, reseal=True, labels=["defect", "ok", "scratch"])
    line = _one_error_line(_run(str(bundle), str(image), "--trusted-key", str(public), "--allow-unsigned",
                                tmp_path=tmp_path))
    assert "manifest.json does not match its signature by trusted key" in line and "edge-runtime.pub" in line
