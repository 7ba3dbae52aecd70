"""benchmarks/bench_aot.py: the sparse GEMV compiled ahead of time loads without numba and agrees with the JIT."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("numba.pycc")
pytest.importorskip("onnxruntime")  # common.machine_info records its version


def test_aot_kernel_loads_without_numba_and_matches_the_jit(tmp_path: Path, capsys) -> None:
    from benchmarks import bench_aot

    out = tmp_path / "aot.json"
    assert bench_aot.main(["--k", "96", "--n", "80", "--repeats", "1", "--calls", "3", "--blocks", "3", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    med = doc["medians"]
    assert doc["max_abs_diff_aot_vs_numba"] == 0.0  # the same machine code path, the same sums
    assert med["aot"]["numba_loaded"] is False and med["numba"]["numba_loaded"] is True
    # memory, not time: numba's import and LLVM add tens of MB, the extension module almost nothing
    assert med["aot"]["rss_added_mb"] < 20 < med["numba"]["rss_added_mb"], med
    assert set(doc["in_one_process"]["call_ms"]) == {"numba", "aot"}  # recorded, not judged: no timing asserts
    assert "aot  : import" in capsys.readouterr().out
