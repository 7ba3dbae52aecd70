"""run_bundle / `edge-runtime run` / watch on PNG folders."""
from __future__ import annotations

import argparse
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from edge_runtime.preprocessing import list_images, load_image
from edge_runtime.validation import commands
from edge_runtime.validation.run import BundleRunner, run_bundle, watch
from tests.edge_runtime.validation.conftest import LABELS, make_image


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.add_parsers(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_run_folder_gives_pytorch_labels(exported, image_dir, model):
    files = list_images([image_dir])
    pre = load_bundle_pre(exported)
    x = np.stack([load_image(f, pre) for f in files])
    with torch.no_grad():
        expected = [LABELS[i] for i in model(torch.from_numpy(x)).argmax(1).tolist()]
    for batch in (1, 4):
        results = run_bundle(exported, [image_dir], batch=batch, threads=1)
        assert [r.path for r in results] == [str(f) for f in files]
        assert [r.label for r in results] == expected
        assert all(r.ok and 1 / 3 < r.score <= 1 and r.latency_ms > 0 for r in results)
    # the labels are the folder names: the model is right on every image
    assert expected == [f.parent.name for f in files]


def load_bundle_pre(bundle):
    from edge_runtime.bundle import load_bundle

    return load_bundle(bundle).preprocessing


@pytest.fixture
def messy_dir(image_dir, tmp_path):
    folder = tmp_path / "messy"
    shutil.copytree(image_dir / "defect", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(make_image(2, 7, size=(64, 48))).save(folder / "wide.png")
    Image.fromarray(np.full((32, 32), 4000, np.uint16)).save(folder / "deep.png")  # 16-bit
    return folder


def test_bad_files_get_per_file_errors_and_the_rest_runs(exported, messy_dir, tmp_path, capsys):
    results = {r.path.rsplit("/", 1)[-1]: r for r in run_bundle(exported, [messy_dir], exact_size=True)}
    assert "cannot be decoded as an image" in results["broken.png"].error
    assert "is 64x48 (WxH) but the model takes exactly 32x32" in results["wide.png"].error
    assert "16-bit or float" in results["deep.png"].error
    good = [r for name, r in results.items() if name.startswith("defect_")]
    assert len(good) == 6 and all(r.ok and r.label == "defect" for r in good)
    resized = run_bundle(exported, [messy_dir / "wide.png"])  # without --exact-size it is resized
    assert resized[0].ok and resized[0].label == "scratch"

    out = tmp_path / "results.csv"
    code = _cli(["run", str(exported), str(messy_dir), "--exact-size", "--out", str(out), "--batch", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.png: cannot be decoded" in captured.err and "3 of 9 image(s) failed" in captured.err
    assert captured.out.count("\tdefect\t") == 6
    lines = out.read_text().splitlines()
    assert lines[0] == "path,label,index,score,latency_ms,error" and len(lines) == 10
    with pytest.raises(Exception, match="already exists"):
        _cli(["run", str(exported), str(messy_dir), "--out", str(out)])


def test_run_cli_all_good_exit_0_json(exported, image_dir, tmp_path):
    out = tmp_path / "r.json"
    assert _cli(["run", str(exported), str(image_dir / "ok"), "--out", str(out)]) == 0
    assert out.read_text().count('"label": "ok"') == 6


def test_watch_picks_up_file_created_after_start(exported, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    Image.fromarray(make_image(0, 1)).save(folder / "old.png")  # present at start: not reprocessed
    runner = BundleRunner(exported, threads=1)

    def drop_file():
        time.sleep(0.3)
        Image.fromarray(make_image(1, 2)).save(folder / "new.png")

    seen = []
    thread = threading.Thread(target=drop_file)
    thread.start()
    results = watch(folder, runner, poll_interval=0.05, max_files=1, timeout=30, on_result=seen.append)
    thread.join()
    assert [r.path for r in results] == [str(folder / "new.png")] and seen == results
    assert results[0].label == "defect"


def test_watch_stops_on_timeout_and_event(exported, tmp_path):
    runner = BundleRunner(exported, threads=1)
    assert watch(tmp_path, runner, poll_interval=0.05, timeout=0.2) == []
    stop = threading.Event()
    stop.set()
    assert watch(tmp_path, runner, stop=stop) == []
