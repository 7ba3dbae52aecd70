"""`run` fails closed and keeps going: NaN outputs, failed batches, odd names, formulas, bombs, the watcher."""
from __future__ import annotations

import csv
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from edge_runtime.validation.results import Result, ResultWriter, csv_cell, format_results
from edge_runtime.validation.run import BundleRunner, watch
from tests.edge_runtime.validation.conftest import make_image


@pytest.fixture(scope="module")
def runner(exported):
    return BundleRunner(exported, threads=1)


def _png(path, label=0, seed=0):
    Image.fromarray(make_image(label, seed)).save(path)
    return path


def test_non_finite_output_is_an_error_never_a_class(runner, tmp_path, monkeypatch):
    files = [_png(tmp_path / "a.png"), _png(tmp_path / "b.png", 1)]
    real = runner.session.run

    def nan_first(names, feed):
        out = real(names, feed)
        out[0] = np.array(out[0], copy=True)
        out[0][0, 1] = np.nan
        return out

    monkeypatch.setattr(runner.session, "run", nan_first)
    first, second = runner.run_files(files, batch=2)
    assert first.label is None and "not finite" in first.error
    assert second.ok and second.label == "defect"


def test_a_failing_batch_is_recorded_and_the_next_one_runs(runner, tmp_path, monkeypatch):
    files = [_png(tmp_path / f"{i}.png", i % 3, i) for i in range(3)]
    real, calls = runner.session.run, []

    def fail_once(names, feed):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("kernel exploded")
        return real(names, feed)

    monkeypatch.setattr(runner.session, "run", fail_once)
    results = runner.run_files(files, batch=1)
    assert "kernel exploded" in results[0].error and results[1].ok and results[2].ok


def test_undecodable_names_are_escaped_and_formulas_neutralised(runner, tmp_path):
    name = os.fsdecode(b"cam\xff.png")
    _png(tmp_path / name)
    result, = runner.run_files([tmp_path / name])
    assert result.ok
    text = format_results([result, Result("=HYPERLINK(1).png", "+cmd", 0, 0.5, 1.0)], "csv")
    text.encode("utf-8")  # no surrogates left
    rows = list(csv.reader(text.splitlines()))
    assert rows[1][0].endswith("cam\\xff.png")
    assert rows[2][:2] == ["'=HYPERLINK(1).png", "'+cmd"]
    assert csv_cell("-1") == "'-1" and csv_cell(0.5) == 0.5


def test_decompression_bomb_is_refused_from_the_input_size(runner, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (5000, 5000)).save(bomb)  # 25 MP of zeros: a few KB on disk
    assert runner.max_image_pixels is not None and 5000 * 5000 > runner.max_image_pixels
    result, = runner.run_files([bomb])
    assert result.error and "decompression bomb" in result.error.lower()


def test_result_writer_appends_rows(tmp_path):
    out = tmp_path / "r.csv"
    writer = ResultWriter(out)
    assert out.read_text().splitlines() == ["path,label,index,score,latency_ms,error"]
    writer.add(Result("a.png", "ok", 0, 0.9, 1.0))
    assert out.read_text().count("a.png") == 1  # on disk before close
    writer.add(Result("b.png", error="b.png: bad"))
    writer.close()
    assert len(out.read_text().splitlines()) == 3


def test_watch_processes_existing_files_but_not_done_ones_or_symlinks(runner, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    old = _png(folder / "old.png")
    done = _png(folder / "done.png", 1)
    outside = _png(tmp_path / "outside.png", 2)
    (folder / "link.png").symlink_to(outside)
    results = watch(folder, runner, poll_interval=0.05, include_existing=True, done=[done], timeout=1.5)
    assert [r.path for r in results] == [str(old)]


def test_watch_retries_a_file_that_was_still_being_written(runner, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    full = _png(tmp_path / "full.png", 1).read_bytes()
    target = folder / "frame.png"
    target.write_bytes(full[: len(full) // 2])  # a writer that paused mid-file

    def finish():
        time.sleep(0.4)  # several polls see a stable, truncated file
        target.write_bytes(full)

    thread = threading.Thread(target=finish)
    thread.start()
    results = watch(folder, runner, poll_interval=0.05, include_existing=True, max_files=1, timeout=10)
    thread.join()
    assert len(results) == 1 and results[0].ok and results[0].label == "defect"
