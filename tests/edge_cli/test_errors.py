"""Every bad input a first-day user hits: exit 2, one line naming the fix, no traceback, files untouched."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.edge_cli.conftest import assert_user_error, cli


def _untouched(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_unknown_profile_in_devices_show_is_one_line():
    assert_user_error(cli("devices", "show", "no-such-board"), "no-such-board", "Available", "raspberry-pi-5")


def _shipped_with(old: str, new: str) -> str:
    from device_profiles import SHIPPED_DIR

    text = (SHIPPED_DIR / "raspberry-pi-4.toml").read_text()
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize("edit, needle", [
    (("[memory]", "[memory"), "TOML"),
    (("bandwidth_gbps = ", "bandwidth_gbps = -"), "bandwidth"),
    (("[memory]", "[memory]\nspeed = 3"), "speed"),
])
def test_broken_profile_files_are_one_line(tmp_path, edit, needle):
    bad = tmp_path / "bad.toml"
    bad.write_text(_shipped_with(*edit))
    proc = cli("devices", "show", str(bad))
    assert_user_error(proc, "bad.toml")
    assert needle.lower() in proc.stderr.lower()


def test_profile_with_unknown_device_fails_before_measuring(bundle):
    proc = cli("profile", str(bundle), "--device", "no-such-board", "--runs", "1000000")
    assert_user_error(proc, "no-such-board", "Available")


def test_usage_error_is_one_line_naming_help():
    assert_user_error(cli("profile", "--runs", "x"), "--runs", "--help")


def test_calibrate_refuses_existing_out_before_measuring(tmp_path):
    out = tmp_path / "host.toml"
    out.write_text("# mine\n")
    before = _untouched(out)
    assert_user_error(cli("devices", "calibrate", "--out", str(out)), "already exists", "--overwrite")
    assert _untouched(out) == before


@pytest.mark.parametrize("flag, name, needle", [
    ("--json", "p.json", "already exists"),
    ("--plot", "p.png", "already exists"),
    ("--plot", "p.jpg", ".png"),
    ("--json", "missing/p.json", "does not exist"),
])
def test_profile_checks_outputs_before_work(bundle, tmp_path, flag, name, needle):
    out = tmp_path / name
    if needle == "already exists":
        out.write_text("keep")
    proc = cli("profile", str(bundle), flag, str(out), "--runs", "1000000")
    assert_user_error(proc, flag, needle)
    if needle == "already exists":
        assert out.read_text() == "keep"


@pytest.mark.parametrize("name, needle", [("res.txt", ".csv"), ("nope/res.csv", "does not exist")])
def test_run_checks_out_before_opening_the_bundle(bundle, images, tmp_path, name, needle):
    assert_user_error(cli("run", str(bundle), str(images), "--out", str(tmp_path / name)), "--out", needle)


def test_run_refuses_an_existing_out(bundle, images, tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("old results\n")
    before = _untouched(out)
    assert_user_error(cli("run", str(bundle), str(images), "--out", str(out)), "already exists", "--overwrite")
    assert _untouched(out) == before


def test_validate_refuses_existing_report(bundle, tmp_path):
    report = tmp_path / "v.md"
    report.write_text("keep")
    assert_user_error(cli("validate", str(bundle), "--report", str(report)), "--report", "--overwrite")
    assert report.read_text() == "keep"


def test_export_names_how_to_make_the_module_importable(tmp_path):
    proc = cli("export", "nopkg.models:make", "--input-shape", "1,3,8,8", "--out", str(tmp_path / "b"),
               cwd=tmp_path)
    assert_user_error(proc, "nopkg", "PYTHONPATH", "folder that contains nopkg/")


def test_export_imports_the_module_from_the_current_directory(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten())\n")
    proc = cli("export", "mypkg.models:make", "--input-shape", "1,3,8,8", "--out", "b", "--formats", "onnx",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b" / "model.onnx").is_file()
    assert "Warning" not in proc.stderr and "W1" not in proc.stderr  # third-party chatter filtered


def test_outputs_honour_the_umask(bundle, images, tmp_path):
    out = tmp_path / "r.csv"
    proc = cli("run", str(bundle), str(images), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert len(out.read_text().splitlines()) == 4  # header + 3 images
    report = tmp_path / "v.json"
    assert cli("validate", str(bundle), "--backends", "edge", "--json", str(report),
               "--no-progress").returncode == 0
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary files left


def test_calibrate_out_honours_the_umask(tmp_path):
    out = tmp_path / "host.toml"
    proc = cli("devices", "calibrate", "--quick", "--out", str(out), umask=0o027)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_devices_list_survives_a_broken_profile_and_many_files(tmp_path, monkeypatch):
    from device_profiles import SHIPPED_DIR

    text = (SHIPPED_DIR / "raspberry-pi-4.toml").read_text()
    for i in range(300):
        (tmp_path / f"b{i}.toml").write_text(text.replace('name = "raspberry-pi-4"', f'name = "b{i}"'))
    (tmp_path / "broken.toml").write_text("[memory")
    monkeypatch.setenv("EDGE_RUNTIME_PROFILES", str(tmp_path))
    proc = cli("devices", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 300 + 1 + 5 and any(line.startswith("broken") and "UNUSABLE" in line for line in lines)
    unknown = cli("devices", "show", "nope")
    assert_user_error(unknown, "more: run `edge-runtime devices list`")
    assert len(unknown.stderr) < 1500  # not 300 names


def test_unreadable_json_argument_is_a_usage_error(tmp_path):
    proc = cli("validate", str(tmp_path), "--reference-preprocessing", str(tmp_path / "missing.json"))
    assert_user_error(proc, "--reference-preprocessing", "missing.json", "--help")
