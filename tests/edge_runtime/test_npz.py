"""npz.read_npz guards the user's data files too: validate --data (classifier and task NPZs), profile --input."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import npz
from edge_runtime.errors import InvalidArgumentError
from edge_runtime.graph import ValueInfo
from edge_runtime.profiling.inputs import make_feeds
from edge_runtime.validation.datasets import load_labelled
from edge_runtime.validation.task_data import load_task_data
from tests.edge_runtime.test_golden import write_bomb


def _small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("edge_runtime.validation.datasets", "edge_runtime.validation.task_data",
                   "edge_runtime.profiling.inputs"):
        monkeypatch.setattr(f"{module}.data_limit_bytes", lambda: 1 << 20)


def test_zip_bombs_in_user_data_are_refused_before_inflating(tmp_path, monkeypatch):
    write_bomb(tmp_path / "d.npz", (1 << 20,), 4 << 20)  # 4 MiB of zeros in a ~4 KB zip
    _small_limit(monkeypatch)
    calls = [lambda: load_labelled(tmp_path / "d.npz", ["a", "b"], None),
             lambda: load_task_data(tmp_path / "d.npz", "segmentation", (4,), 2),
             lambda: make_feeds(tmp_path / "d.npz", [ValueInfo("x", np.dtype(np.float32), (1, 4))], None)]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match=r"declares shape \(1048576,\).*1 MiB limit") as info:
            call()
        assert str(info.value).startswith("--") and "\n" not in str(info.value)


def test_object_arrays_and_broken_files_are_one_line_errors(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.zeros((2, 4), np.float32), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InvalidArgumentError, match="--data: .*'y' has dtype object .*pickle"):
        load_labelled(tmp_path / "o.npz", ["a", "b"], None)
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InvalidArgumentError, match="--input: .*cannot read t.npz as .npz"):
        make_feeds(tmp_path / "t.npz", [ValueInfo("x", np.dtype(np.float32), (1, 4))], None)


def test_data_limit_is_half_the_memory_left(monkeypatch):
    monkeypatch.setattr("edge_runtime.resources.available_memory", lambda: 1 << 30)
    assert npz.data_limit_bytes() == 1 << 29
