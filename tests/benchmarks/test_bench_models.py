"""benchmarks/bench_models.py: --footprint-python runs the fresh processes under the named interpreter, repeats keep each run's plan; --control adds a second identical onnxruntime session."""
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

    envs: list[dict] = []
    monkeypatch.setattr(bench_models.subprocess, "run",
                        lambda cmd, **kw: seen.append(cmd[0]) or envs.append(kw.get("env") or {}) or Done())
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    out = bench_models._footprint(tmp_path / "m.onnx", 1, python="/opt/device-venv/bin/python")
    assert set(seen) == {"/opt/device-venv/bin/python"}
    # the tree byte-compiled as pip does, one process compiling the kernels ahead of time, then one per run
    assert len(seen) == 2 + sum(len(runs) for runs in bench_models._FOOTPRINT_RUNS.values())
    assert not any("PYTHONDONTWRITEBYTECODE" in env for env in envs)  # lazily imported modules find their .pyc
    assert out["ort_warm"]["peak_rss_mb"] == 80.0


def test_footprint_repeats_take_medians_and_keep_each_runs_plan(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import bench_models

    plans = iter(["2 sparse islands; cut kept", "2 sparse islands; numba kept", "2 sparse islands; cut kept"])

    def one_run(path: Path, threads: int, root: Path | None = None, python: str | None = None) -> dict:
        mb = {"2 sparse islands; cut kept": 210.0, "2 sparse islands; numba kept": 201.0}
        plan = next(plans)
        return {"edge_warm": {"create_s": 0.5, "peak_rss_mb": mb[plan], "plan": plan}}

    monkeypatch.setattr(bench_models, "_footprint", one_run)
    out = bench_models._footprint_compared(tmp_path / "m.onnx", {"after": tmp_path}, 3)["after"]["edge_warm"]
    assert out["peak_rss_mb"] == 210.0 and out["repeats"] == 3
    assert out["plans"] == ["2 sparse islands; cut kept", "2 sparse islands; numba kept", "2 sparse islands; cut kept"]


def test_a_bad_interpreter_is_one_line_naming_the_flag(tmp_path: Path, capsys) -> None:
    from benchmarks import bench_models

    with pytest.raises(SystemExit) as exit_info:
        bench_models.main(["--footprint-only", "--footprint-python", str(tmp_path / "no-python"),
                           "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--footprint-python" in err and "no-python" in err and "cannot be run" in err
    assert not (tmp_path / "out.json").exists()


def _relu_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_control_adds_a_second_identical_onnxruntime_session(tmp_path: Path) -> None:
    import numpy as np

    from benchmarks import bench_models

    x = np.linspace(-1, 1, 8, dtype=np.float32)[None]
    plain = bench_models._sessions(_relu_model(tmp_path / "relu.onnx"), 1, x)
    both = bench_models._sessions(tmp_path / "relu.onnx", 1, x, control=True)
    assert set(plain) == {"edge", "numba", "ort"} and set(both) == {"edge", "numba", "ort", "ort_b"}
    assert both["ort_b"] is not both["ort"]
    np.testing.assert_array_equal(both["ort_b"].run(None, {"input": x})[0], both["ort"].run(None, {"input": x})[0])


def test_table_shows_the_control_column_only_when_measured() -> None:
    from benchmarks import bench_models

    row = {"model": "m", "threads": 2, "load": "idle", "ms": {"ort": 1.0, "edge": 1.1, "numba": 2.0},
           "ratio_vs_ort": {"edge": 1.1, "numba": 2.0}, "ratio_interval_90": {"edge": (0.9, 1.3), "numba": (1.8, 2.2)},
           "target": 1.05, "edge_profile": {"densities": {}}, "engine_report": None, "edge_providers": ["CPUExecutionProvider"]}
    assert "control" not in bench_models._table([row])
    row["ratio_vs_ort"]["ort_b"], row["ratio_interval_90"]["ort_b"] = 0.97, (0.8, 1.4)
    table = bench_models._table([row])
    assert "control ort_b/ort (90%)" in table and "0.970 (0.80-1.40)" in table


def test_the_interpreter_flag_without_a_footprint_run_says_which_flag_to_add(tmp_path: Path, capsys) -> None:
    from benchmarks import bench_models

    with pytest.raises(SystemExit) as exit_info:
        bench_models.main(["--footprint-python", sys.executable, "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert "add --footprint or --footprint-only" in capsys.readouterr().err


def test_numpy_islands_contender_is_the_onnxruntime_engine_with_numpy_kernels(tmp_path: Path) -> None:
    import numpy as np

    from benchmarks import bench_models

    x = np.linspace(-1, 1, 8, dtype=np.float32)[None]
    found = bench_models._sessions(_relu_model(tmp_path / "relu.onnx"), 1, x, numpy_islands=True)
    assert set(found) == {"edge", "numba", "ort", "edgenp"}
    np.testing.assert_allclose(found["edgenp"].run(None, {"input": x})[0], found["ort"].run(None, {"input": x})[0],
                               rtol=1e-6)
    row = {"model": "m", "threads": 1, "load": "idle", "ms": {"ort": 1.0, "edge": 1.1, "numba": 2.0, "edgenp": 0.5},
           "ratio_vs_ort": {"edge": 1.1, "numba": 2.0, "edgenp": 0.5},
           "ratio_interval_90": {"edge": (0.9, 1.3), "numba": (1.8, 2.2), "edgenp": (0.4, 0.6)},
           "target": 1.05, "edge_profile": {"densities": {}}, "engine_report": None, "edge_providers": ["CPUExecutionProvider"]}
    table = bench_models._table([row])
    assert "numpy islands/ort (90%)" in table and "0.500 (0.40-0.60)" in table
