"""A small exported bundle (ONNX only) and images, and a helper running ``edge-runtime`` as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*argv: str, cwd: Path | None = None, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edge_cli ARGV`` with this checkout first on PYTHONPATH, under ``umask``.

    The umask is set by a shell (no ``preexec_fn``: forking a process that runs Python code
    between fork and exec is unsafe once JAX's threads exist in the test process).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shell = f'umask {umask:03o} && exec "$0" "$@"'
    return subprocess.run(["sh", "-c", shell, sys.executable, "-m", "edge_cli", *argv], cwd=cwd or REPO, env=env,
                          text=True, capture_output=True, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, exactly one stderr line starting 'error:', containing every needle, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    import torch

    from exporters import export
    from tests.edge_runtime.validation.conftest import LABELS, TRUE_PRE, ColorNet

    out = tmp_path_factory.mktemp("cli") / "bundle"
    export(ColorNet().eval(), torch.randn(1, 3, 32, 32), out, formats=["onnx"], labels=LABELS,
           preprocessing=TRUE_PRE)
    return out


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    from tests.edge_runtime.validation.conftest import make_image

    root = tmp_path_factory.mktemp("cli-images")
    for i in range(3):
        Image.fromarray(make_image(i, i)).save(root / f"img_{i}.png")
    return root
