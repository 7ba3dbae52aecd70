"""``edge-runtime demo``: the whole promise in one command, on embedded data and shipped models.

model (shipped, or trained with ``train=True``) -> calibrate -> annotated bundle (ONNX + TFLite)
-> validate on the generated test split with every available backend -> profile edge vs
edge-numba (no onnxruntime) vs onnxruntime (vs LiteRT) here, with estimates for every shipped device profile
-> the defect segmenter (a ReLU U-Net) exported with ``task="segmentation"``, validated
against PyTorch on labelled masks and profiled (:mod:`exporters.demo.seg_pipeline`)
-> ``report.md`` with charts, and a short summary.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime.errors import InvalidArgumentError

log = logging.getLogger(__name__)

MODELS = ("cnn", "vit")
LABELS = ("ok", "defect")


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs; the defaults are the full demo (under 3 minutes on 2 cores)."""

    out: Path = Path("demo-out")
    model: str = "cnn"                       # "cnn" (ReLU CNN, FATReLU-trained) or "vit" (ReLU ViT-tiny)
    devices: tuple[str, ...] = ("raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano")
    train: bool = False                      # train the model here (a few minutes) instead of the shipped one
    train_epochs: int = 3                    # epochs for train=True
    overwrite: bool = False                  # replace an existing, non-empty output directory
    calib_samples: int = 256                 # training images used to measure per-layer sparsity
    test_images: int = 200                   # test-split images written as an ImageFolder and validated
    perturb: tuple[str, ...] = ("noise", "blur")  # corruptions for the robustness table (3 severities each)
    runs: int = 200                          # timed calls per backend when profiling (40 left a near-tie at +-12%)
    threads: int = 1                         # profiling threads: 1 gives stable figures on a shared machine
    warmup: int = 5                          # untimed calls per backend first
    formats: tuple[str, ...] = ("onnx", "tflite?")  # "?" = skip TFLite with a warning if it fails
    quantize: str | None = "int8"            # also export, validate and profile the int8 model (None: fp32 only)
    segmenter: bool = True                   # also export, validate and profile the defect segmenter (U-Net)
    seg_images: int = 100                    # test images (half with a defect) the segmenter is validated on
    progress: bool = True
    data_config: Any = None                  # a DemoDataConfig; None = the default (the shipped models' data)

    def check(self) -> None:
        """Raises InvalidArgumentError on values the pipeline cannot run with."""
        if self.model not in MODELS:
            raise InvalidArgumentError(f"--model {self.model!r} is not a demo model; choose one of {list(MODELS)}.")
        from device_profiles import list_profiles

        unknown = [d for d in self.devices if d not in list_profiles()]
        if unknown:
            raise InvalidArgumentError(f"--device {unknown} is not a known profile; available: {list_profiles()}.")
        for name, value in (("calib_samples", self.calib_samples), ("test_images", self.test_images),
                            ("runs", self.runs), ("seg_images", self.seg_images)):
            if value < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, got {value}.")


@dataclass
class DemoResult:
    """Paths and figures of one demo run (``summary`` is what the CLI prints)."""

    out: Path
    report: Path
    passed: bool
    summary: list[str]
    timings_s: dict[str, float]
    data: dict[str, Any]


Step = Callable[[], Any]


class _Steps:
    """Runs named steps in order, printing '[i/n] name ... done in X s' through ``say``."""

    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.total, self.say, self.i, self.timings = total, say, 0, {}

    def run(self, name: str, fn: Step) -> Any:
        self.i += 1
        self.say(f"[{self.i}/{self.total}] {name} ...")
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"[{self.i}/{self.total}] {name}: done in {self.timings[name]:.1f} s")
        return result


def _prepare_out(s: DemoSettings) -> None:
    if s.out.exists() and any(s.out.iterdir()):
        if not s.overwrite:
            raise InvalidArgumentError(
                f"output directory '{s.out}' exists and is not empty; pass --overwrite to replace the demo's "
                f"files there, or choose another --out.")
        for sub in ("bundle", "data", "segmenter"):
            shutil.rmtree(s.out / sub, ignore_errors=True)
    s.out.mkdir(parents=True, exist_ok=True)


def _load_data(s: DemoSettings) -> dict[str, Any]:
    from exporters.demo.dataset import DemoDataConfig, load_splits

    config = s.data_config or DemoDataConfig()
    splits = load_splits(config)
    return {"config": config, "train": splits["train"], "test": splits["test"]}


def _load_model(s: DemoSettings, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from exporters.demo.models import load_pretrained, pretrained_info
    from exporters.demo.train import train

    if s.train:
        model, metrics = train(s.model, data["config"], epochs=s.train_epochs, progress=s.progress)
        return model.eval(), {"source": f"trained here for {s.train_epochs} epochs", **metrics}
    return load_pretrained(s.model).eval(), {"source": "shipped checkpoint", **pretrained_info(s.model)}


def _export(s: DemoSettings, model: Any, data: dict[str, Any]) -> Any:
    import exporters
    from exporters.demo.dataset import preprocessing, to_tensor

    x_train = data["train"][0]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x_train), size=min(s.calib_samples, len(x_train)), replace=False)
    calib = to_tensor(x_train[np.sort(pick)])
    report = exporters.calibrate(model, calib, keep_inputs=len(calib))  # all of them calibrate the int8 model
    return exporters.export(model, calib[:1], s.out / "bundle", calibration=report, formats=s.formats,
                            labels=list(LABELS), preprocessing=preprocessing(data["config"]),
                            overwrite=True, name=f"demo-{s.model}", quantize=s.quantize)


def _test_folder(s: DemoSettings, data: dict[str, Any]) -> Path:
    from exporters.demo.dataset import export_imagefolder

    x, y = data["test"][0], data["test"][1]
    # an even mix of both classes, so recall of either is measured on enough images
    idx = np.concatenate([np.flatnonzero(y == c)[: s.test_images // 2] for c in range(len(LABELS))])
    return export_imagefolder(x[idx], y[idx], s.out / "data" / "test", labels=LABELS, overwrite=True)


def _validate(s: DemoSettings, model: Any, folder: Path) -> Any:
    from edge_runtime.validation import validate_bundle
    from edge_runtime.validation.report import write_json, write_markdown

    report = validate_bundle(s.out / "bundle", data=folder, perturb=s.perturb, progress=s.progress,
                             torch_model=model)
    write_json(report, s.out / "validation.json", overwrite=True)
    write_markdown(report, s.out / "validation.md", overwrite=True)
    return report


def _profile(s: DemoSettings) -> Any:
    from edge_runtime.profiling import profile_model
    from edge_runtime.profiling.report import plot, write_json

    int8 = ("edge-int8", "onnxruntime-int8", "litert-int8") if s.quantize else ()  # litert-int8: skipped
    # with its reason when the bundle has no int8 TFLite model (tflite was optional)
    result = profile_model(s.out / "bundle", backends=("edge", "edge-numba", "onnxruntime", "litert", *int8),
                           devices=s.devices, runs=s.runs, warmup=s.warmup, input="golden",
                           threads=s.threads, progress=s.progress)
    write_json(result, s.out / "profile.json", overwrite=True)
    plot(result, s.out / "latency.png", overwrite=True)
    return result


def run_demo(settings: DemoSettings, say: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole pipeline and write ``settings.out/report.md``.

    ``say`` receives one progress line per step start and end (the CLI passes ``print``;
    the default logs them at INFO).

    Raises:
        InvalidArgumentError: bad settings, or a non-empty output directory without overwrite.
        EdgeRuntimeError: a step failed (export, validation, profiling), with its own message.
    """
    settings.check()
    _prepare_out(settings)
    steps = _Steps(8 if settings.segmenter else 7, say or log.info)
    data = steps.run("generate the inspection data set", lambda: _load_data(settings))
    model, info = steps.run("load the model" if not settings.train else "train the model",
                            lambda: _load_model(settings, data))
    bundle = steps.run("calibrate sparsity and export the bundle (ONNX + TFLite)",
                       lambda: _export(settings, model, data))
    folder = steps.run("write the test split as an ImageFolder", lambda: _test_folder(settings, data))
    validation = steps.run("validate every backend against PyTorch", lambda: _validate(settings, model, folder))
    profile = steps.run("profile here and estimate on devices", lambda: _profile(settings))
    seg = None
    if settings.segmenter:
        from exporters.demo.seg_pipeline import run_segmenter

        seg = steps.run("export, validate and profile the defect segmenter",
                        lambda: run_segmenter(settings, data))
    from exporters.demo.report import summary_lines, write_report

    report = steps.run("write report.md", lambda: write_report(settings, info, bundle, validation, profile,
                                                               steps.timings, seg))
    summary = summary_lines(settings, info, bundle, validation, profile, seg)
    from edge_runtime.outputs import write_atomic

    write_atomic(settings.out / "demo.json", json.dumps({"settings": _jsonable(asdict(settings)), "model": info,
                                                         "timings_s": steps.timings, "summary": summary},
                                                        indent=2, default=str), overwrite=True)
    passed = bool(validation.passed) and (seg is None or seg.passed)
    return DemoResult(settings.out, report, passed, summary, steps.timings,
                      {"bundle": str(bundle.path), **({"segmenter": str(seg.bundle.path)} if seg else {})})


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}
