"""benchmarks/bench_models.py --footprint-python: the fresh processes run under the named interpreter."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")  # bench_models builds its models with torch
pytest.importorskip("onnxruntime")


def test_interpreter_reports_what_it_can_import() -> None:
    from benchmarks import bench_models

    doc = bench_models._interpreter(sys.executable)
    assert doc["python"] == sys.executable
    assert doc["version"] == sys.version.split()[0]
    assert "numba" in doc["importable"] and "torch" in doc["importable"]


def test_footprint_runs_its_processes_under_the_given_interpreter(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import bench_models

    seen: list[str] = []

    class Done:
        returncode, stderr = 0, ""
        stdout = '{"create_s": 0.1, "first_run_s": 0.01, "peak_rss_mb": 80.0, "session_peak_mb": 10.0}\n'

    monkeypatch.setattr(bench_models.subprocess, "run", lambda cmd, **kw: seen.append(cmd[0]) or Done())
    out = bench_models._footprint(tmp_path / "m.onnx", 1, python="/opt/device-venv/bin/python")
    assert set(seen) == {"/opt/device-venv/bin/python"}
    assert len(seen) == sum(len(runs) for runs in bench_models._FOOTPRINT_RUNS.values())
    assert out["ort_warm"]["peak_rss_mb"] == 80.0


def test_a_bad_interpreter_is_one_line_naming_the_flag(tmp_path: Path, capsys) -> None:
    from benchmarks import bench_models

    with pytest.raises(SystemExit) as exit_info:
        bench_models.main(["--footprint-only", "--footprint-python", str(tmp_path / "no-python"),
                           "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--footprint-python" in err and "no-python" in err and "cannot be run" in err
    assert not (tmp_path / "out.json").exists()
