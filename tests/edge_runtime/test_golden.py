"""golden.npz: no pickles, declared sizes checked before inflating, one-line exit 2 in validate."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import golden as golden_module
from edge_runtime.errors import BundleError
from edge_runtime.golden import load_golden
from tests.edge_runtime.bundle_factory import edit, make_bundle, sha

ROOT = Path(__file__).resolve().parents[2]


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_bomb(path: Path, declared: tuple[int, ...], zeros: int) -> None:
    """A zip whose x.npy declares ``declared`` float32 and holds ``zeros`` bytes of zeros (deflated)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(_npy_header(declared))
            chunk = bytes(1 << 20)
            for start in range(0, zeros, len(chunk)):
                member.write(chunk[:min(len(chunk), zeros - start)])
        archive.writestr("y.npy", b"")


def test_valid_golden(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    golden = load_golden(bundle / "golden.npz")
    assert golden.x.shape == (4, 1, 2, 2) and golden.ys[0].shape == (4, 3) and golden.output_names == ("logits",)


def test_warmup_feeds_are_the_first_golden_images_one_per_feed(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    x = load_golden(bundle / "golden.npz").x
    feeds = golden_module.warmup_feeds(bundle / "golden.npz", "x", 8)
    assert len(feeds) == 4 and all(list(f) == ["x"] and f["x"].shape == (1, 1, 2, 2) for f in feeds)
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), x)
    assert len(golden_module.warmup_feeds(bundle / "golden.npz", "x", 2)) == 2
    from edge_runtime.bundle import load_bundle

    assert len(load_bundle(bundle).warmup_feeds()) == 4


def test_object_array_is_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.zeros((2, 2), np.float32), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(BundleError, match="array 'y' has dtype object .*pickle"):
        load_golden(tmp_path / "g.npz")


@pytest.mark.parametrize("arrays, needle", [
    ({"x": np.zeros((2, 2), np.float32)}, r"lacks \['y'\]"),
    ({"y": np.zeros((2, 2), np.float32)}, r"lacks \['x'\]"),
    ({"x": np.zeros((2, 2), np.float32), "y": np.zeros((3, 2))}, "golden y has .* 2 rows like x"),
    ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, "golden x has dtype <U1"),
])
def test_missing_or_inconsistent_keys(tmp_path, arrays, needle):
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(BundleError, match=needle):
        load_golden(tmp_path / "g.npz")


def test_not_a_zip(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BundleError, match="cannot read g.npz as .npz"):
        load_golden(tmp_path / "g.npz")


def test_header_declaring_more_than_the_entry_holds(tmp_path):
    write_bomb(tmp_path / "g.npz", (1_250_000_000,), 1024)  # declares 5 GB, holds 1 KB
    with pytest.raises(BundleError, match=r"declares shape \(1250000000,\)"):
        load_golden(tmp_path / "g.npz")


def test_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    write_bomb(tmp_path / "g.npz", (1 << 20,), 4 << 20)  # 4 MiB of zeros in a ~4 KB zip
    assert (tmp_path / "g.npz").stat().st_size < 64 << 10
    monkeypatch.setattr(golden_module, "MAX_GOLDEN_BYTES", 1 << 20)
    with pytest.raises(BundleError, match="MiB limit"):
        load_golden(tmp_path / "g.npz")


def test_zip_bomb_memory_stays_bounded(tmp_path):
    """A 300 MB bomb under an address-space limit 200 MB above the interpreter's: refused, no MemoryError."""
    write_bomb(tmp_path / "g.npz", (75 << 20,), 300 << 20)
    script = textwrap.dedent(f"""
        import resource
        from edge_runtime.errors import BundleError
        from edge_runtime.golden import load_golden
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (200 << 20), resource.RLIM_INFINITY))
        try:
            load_golden({str(tmp_path / "g.npz")!r})
        except BundleError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "MiB limit" in out.stdout


@pytest.mark.parametrize("bad", ["object", "missing_y"])
def test_validate_cli_bad_golden_is_exit_2_one_line(tmp_path, bad):
    bundle = make_bundle(tmp_path / "b")
    x = np.zeros((4, 1, 2, 2), np.float32)
    if bad == "object":
        np.savez(bundle / "golden.npz", x=x, y=np.array([None] * 4, dtype=object))
    else:
        np.savez(bundle / "golden.npz", x=x)
    files = {"model.onnx": sha(bundle / "model.onnx"), "golden.npz": sha(bundle / "golden.npz")}
    edit(bundle, reseal=True, files=files)
    out = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "validate", str(bundle), "--backends",
                          "edge", "--no-progress"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    errors = [line for line in out.stderr.splitlines() if not line.startswith("WARNING")]
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(errors) == 1 and errors[0].startswith("error: ") and "golden.npz" in errors[0]
