"""Whole-model parity: every zoo family, exported by both torch exporters, run by edge_runtime.

Each (family, exporter path) is one test: the model is exported once per session (dynamo at
its default opset >= 18, TorchScript at opset 17, and one ViT at opset 13) and edge_runtime's
output at batch 1 and 4 must match both onnxruntime and PyTorch (the oracle) within 1e-4 of the
output's scale (max |ref|). He-normal weights, random BatchNorm statistics and LayerNorm affines
are drawn so that folding and normalisation are really exercised, and each test first checks
that the reference output is not degenerate (it varies across the batch). The ReLU families also check that
sparsity "off", "auto" and "force" agree and that "force" really runs a sparse kernel.

Budget: the models are tiny (widths 4-16, 16-32 px inputs, one or two blocks per stage) because
the dynamo exporter dominates the run time (roughly 3-15 s per model on a loaded 2-core box).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edge_runtime

torch = pytest.importorskip("torch")  # exporting needs torch; the device-side (arm64) run skips this file
nn = torch.nn
from tests import zoo  # noqa: E402  (imports torch)

REL_TOL = 1e-4          # max |ours - ref| <= REL_TOL * max |ref|
MODES_REL_TOL = 1e-5    # sparse and dense kernels only reorder float sums
MIN_BATCH_SPREAD = 1e-3  # max over outputs of std-over-batch, relative to the output's scale


@dataclass(frozen=True)
class Family:
    """A tiny instance of one zoo family and its input shape (without the batch dim)."""

    build: Callable[[], nn.Module]
    shape: tuple[int, ...]


FAMILIES: dict[str, Family] = {
    # ResNets with one block per stage: same ops (strided blocks, 1x1 downsample, residual Add)
    "resnet18": Family(lambda: zoo.ResNet(zoo.BasicBlock, [1, 1, 1, 1], width=4), (3, 32, 32)),
    "resnet50": Family(lambda: zoo.ResNet(zoo.Bottleneck, [1, 1, 1, 1], width=4), (3, 32, 32)),
    "vgg": Family(lambda: zoo.vgg(width=4, image=32), (3, 32, 32)),
    # two blocks per stage keeps MobileNetV2's residual Adds; V3/EfficientNet cover SE/Hardswish/SiLU
    "mobilenet_v2": Family(lambda: zoo.mobilenet_v2(0.25, repeats=2), (3, 32, 32)),
    "mobilenet_v3_small": Family(lambda: zoo.mobilenet_v3_small(0.25, repeats=1), (3, 32, 32)),
    "efficientnet_b0": Family(lambda: zoo.efficientnet_b0(0.25, repeats=1), (3, 32, 32)),
    "vit_mha_gelu": Family(lambda: zoo.ViT(16, 8, 16, 1, 2, attention="mha", act="gelu"), (3, 16, 16)),
    "vit_hand_gelu_tanh": Family(lambda: zoo.ViT(16, 8, 16, 1, 2, attention="hand", act="gelu_tanh"), (3, 16, 16)),
    "vit_hand_relu": Family(lambda: zoo.ViT(16, 8, 16, 1, 2, attention="hand", act="relu"), (3, 16, 16)),
    "unet": Family(lambda: zoo.UNet(4), (3, 16, 16)),
    "mlp": Family(lambda: zoo.mlp((64, 32, 32, 10)), (64,)),
}

# exporter path -> (export_onnx kwargs, check on the default-domain opset the file declares)
PATHS: dict[str, tuple[dict, Callable[[int], bool]]] = {
    "dynamo": ({"dynamo": True}, lambda v: v >= 18),
    "torchscript17": ({"dynamo": False, "opset": 17}, lambda v: v == 17),
    "torchscript13": ({"dynamo": False, "opset": 13}, lambda v: v == 13),
}
CASES = [(f, p) for f in FAMILIES for p in ("dynamo", "torchscript17")] + [("vit_hand_gelu_tanh", "torchscript13")]
RELU_FAMILIES = ("resnet18", "vgg", "mlp")


def _randomize(model: nn.Module, gen: torch.Generator) -> None:
    """He-normal conv/linear weights, non-trivial BatchNorm statistics and norm affines.

    torch's default init shrinks the signal through the tiny MobileNet/EfficientNet stacks until
    the output is the same constant for every input; He init keeps the variance. BatchNorm and
    LayerNorm defaults are identities, which would let a wrong fold or normalisation pass.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.copy_(nn.init.kaiming_normal_(torch.empty_like(m.weight), nonlinearity="relu",
                                                       generator=gen))
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(0.5 + torch.rand(m.normalized_shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.normalized_shape, generator=gen))


class ExportCache:
    """Builds each family once and exports each (family, path) once per test session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[str, nn.Module] = {}
        self.files: dict[tuple[str, str], Path] = {}

    def model(self, family: str) -> nn.Module:
        if family not in self.models:
            torch.manual_seed(0)
            model = FAMILIES[family].build().eval()
            _randomize(model, torch.Generator().manual_seed(1))
            self.models[family] = model
        return self.models[family]

    def onnx_file(self, family: str, path: str) -> Path:
        key = (family, path)
        if key not in self.files:
            kwargs, _ = PATHS[path]
            x = inputs(family, 4)
            self.files[key] = zoo.export_onnx(self.model(family), x, self.root / f"{family}_{path}.onnx", **kwargs)
        return self.files[key]


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("parity_models"))


def inputs(family: str, batch: int) -> torch.Tensor:
    """A fixed random input batch; batch 1 is the first row of batch 4."""
    gen = torch.Generator().manual_seed(123)
    return torch.randn((4, *FAMILIES[family].shape), generator=gen)[:batch]


def _options() -> tuple[edge_runtime.SessionOptions, ort.SessionOptions]:
    ours, theirs = edge_runtime.SessionOptions(), ort.SessionOptions()
    ours.intra_op_num_threads = theirs.intra_op_num_threads = 1  # the box is shared: one core each
    return ours, theirs


def _rel_diff(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("family, path", CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_model_matches_onnxruntime_and_torch(exports: ExportCache, family: str, path: str) -> None:
    file = exports.onnx_file(family, path)
    opset = _default_opset(onnx.load(str(file), load_external_data=False))
    assert PATHS[path][1](opset), f"{path} export declared opset {opset}"
    ours_opts, ort_opts = _options()
    ours = edge_runtime.InferenceSession(str(file), ours_opts)
    theirs = ort.InferenceSession(str(file), ort_opts, providers=["CPUExecutionProvider"])
    model = exports.model(family)
    for batch in (1, 4):
        x = inputs(family, batch)
        with torch.no_grad():
            ref = model(x).numpy().astype(np.float64)
        if batch > 1:
            spread = float(ref.std(axis=0).max() / np.abs(ref).max())
            assert spread > MIN_BATCH_SPREAD, f"{family}: reference output barely varies over the batch ({spread:.2e})"
        got = ours.run(None, {"input": x.numpy()})[0]
        expected = theirs.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape and got.dtype == np.float32
        vs_ort, vs_torch = _rel_diff(got, expected), _rel_diff(got, ref)
        assert vs_ort <= REL_TOL, f"{family}/{path} batch {batch}: vs onnxruntime rel diff {vs_ort:.2e}"
        assert vs_torch <= REL_TOL, f"{family}/{path} batch {batch}: vs PyTorch rel diff {vs_torch:.2e}"


@pytest.mark.parametrize("family", RELU_FAMILIES)
def test_sparsity_modes_agree(exports: ExportCache, family: str) -> None:
    file = str(exports.onnx_file(family, "torchscript17"))
    x = inputs(family, 4).numpy()
    with torch.no_grad():
        ref = exports.model(family)(torch.from_numpy(x)).numpy().astype(np.float64)
    outs, kernels = {}, {}
    for mode in ("off", "auto", "force"):
        sess = edge_runtime.InferenceSession(file, _options()[0], sparsity=mode)
        (outs[mode],), stats = sess.run_with_stats(None, {"input": x})
        kernels[mode] = {n.kernel for n in stats.nodes}
        assert _rel_diff(outs[mode], ref) <= REL_TOL, f"{family} sparsity={mode} vs PyTorch"
    assert "sparse" not in kernels["off"], f"sparsity='off' ran a sparse kernel: {kernels['off']}"
    assert "sparse" in kernels["force"], f"sparsity='force' ran no sparse kernel: {kernels['force']}"
    for mode in ("auto", "force"):
        assert _rel_diff(outs[mode], outs["off"]) <= MODES_REL_TOL, f"{family}: sparsity={mode} differs from off"
