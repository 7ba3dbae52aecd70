"""The demo end to end on a reduced setting: every section of report.md is there and filled."""
from __future__ import annotations

import json

import pytest

from edge_runtime.errors import InvalidArgumentError

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from exporters.demo.dataset import DemoDataConfig
    from exporters.demo.pipeline import DemoSettings, run_demo

    out = tmp_path_factory.mktemp("demo") / "out"
    settings = DemoSettings(out=out, devices=("raspberry-pi-4", "jetson-orin-nano"), calib_samples=32,
                            test_images=24, perturb=("noise",), runs=5, warmup=1, formats=("onnx",),
                            progress=False, data_config=DemoDataConfig(n_train=64, n_test=48), seg_images=8)
    lines: list[str] = []
    return settings, run_demo(settings, say=lines.append), lines


def test_report_has_every_section(demo):
    from exporters.demo.report import SECTIONS

    settings, result, lines = demo
    text = result.report.read_text()
    for section in SECTIONS:
        assert f"## {section}" in text, section
    assert "| edge |" in text and "| onnxruntime |" in text      # measured backends
    assert "raspberry-pi-4" in text and "jetson-orin-nano" in text  # estimates
    assert "ESTIMATES" in text and "ImageFolder" in text
    assert [line for line in lines if line.startswith("[8/8]")]      # progress for every step
    # read right by a factory engineer: speed in words, density defined, zeros explained, units on charts
    assert "than onnxruntime" in text and "x onnxruntime)" not in text
    assert "*Density* is the fraction of nonzero values" in text and "sparsity 5" not in text
    assert "| 0% |" not in text  # a zero always comes with its reason
    assert "tuned runtime ms" in text and "edge_runtime ms" in text


def test_report_has_the_segmenter_section(demo):
    from exporters.demo.seg_report import SECTION

    settings, result, _ = demo
    text = result.report.read_text()
    section = text[text.index(f"## {SECTION}"):text.index("## Files")]
    assert "| edge |" in section and "defect IoU %" in section and "same pixels as torch %" in section
    assert "defect recall" in section and "*Defect recall*:" in section          # the figure and its definition
    assert "than onnxruntime" in section or "as fast as onnxruntime" in section  # latency vs onnxruntime
    assert "mean input density" in section and "](segmentation.png)" in section
    assert (settings.out / "segmentation.png").is_file() and (settings.out / "segmenter" / "manifest.json").is_file()
    assert any(line.startswith("segmenter (8 test images") for line in result.summary)
    assert result.data["segmenter"].endswith("segmenter")


def test_no_segmenter(tmp_path):
    from exporters.demo.dataset import DemoDataConfig
    from exporters.demo.pipeline import DemoSettings, run_demo

    settings = DemoSettings(out=tmp_path / "out", devices=("raspberry-pi-4",), calib_samples=16, test_images=8,
                            perturb=(), runs=2, warmup=1, formats=("onnx",), progress=False, quantize=None,
                            data_config=DemoDataConfig(n_train=32, n_test=16), segmenter=False)
    lines: list[str] = []
    result = run_demo(settings, say=lines.append)
    assert "Where is the defect" not in result.report.read_text() and not (settings.out / "segmenter").exists()
    assert [line for line in lines if line.startswith("[7/7]")]


def test_artifacts_written(demo):
    settings, result, _ = demo
    out = settings.out
    for name in ("bundle/model.onnx", "bundle/manifest.json", "bundle/golden.npz", "validation.json",
                 "validation.md", "profile.json", "demo.json", "report.md"):
        assert (out / name).is_file(), name
    assert len(list((out / "data" / "test" / "defect").glob("*.png"))) == 12
    profile = json.loads((out / "profile.json").read_text())
    assert {b["backend"] for b in profile["backends"]} >= {"edge", "edge-numba", "onnxruntime"}
    validation = json.loads((out / "validation.json").read_text())
    assert validation["passed"] is result.passed
    assert any(line.startswith("accuracy on") for line in result.summary)


def test_refuses_to_overwrite_a_previous_demo(demo):
    from exporters.demo.pipeline import run_demo

    settings, _, _ = demo
    with pytest.raises(InvalidArgumentError, match="--overwrite"):
        run_demo(settings, say=lambda _: None)


def test_bad_settings():
    from exporters.demo.pipeline import DemoSettings

    with pytest.raises(InvalidArgumentError, match="transformer"):
        DemoSettings(model="transformer").check()
    with pytest.raises(InvalidArgumentError, match="pi-9"):
        DemoSettings(devices=("pi-9",)).check()
    with pytest.raises(InvalidArgumentError, match="seg_images"):
        DemoSettings(seg_images=0).check()
