"""The "relufy" recipe: blend schedule, replacements, distillation, export parity, a short training run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import exporters
from exporters.sparsity import (ActivationBlend, JSquaredReLU, SparsifyError, activation_sparsity,
                                distillation_loss, is_self_gated, sparsify)
from tests.exporters.sparsity.smooth_models import (HSwish, SE, TinyEfficientNet, TinyMobileNetV3, TinyResNet,
                                                    TinyYolo, sequential_cnn)
from tests.exporters.sparsity.tiny_models import TinyViT

FAMILIES = {
    "sequential": (sequential_cnn, 4),  # SiLU, Hardswish, ReLU6, GELU
    "mobilenet_v3": (TinyMobileNetV3, 5),  # stem, expand, depthwise (HSwish), last conv, classifier
    "resnet": (TinyResNet, 3),  # stem + one shared act per BasicBlock
    "efficientnet": (TinyEfficientNet, 4),  # stem, expand, depthwise, SE's SiLU
    "yolo": (TinyYolo, 5),  # one shared SiLU instance at five places
    "vit": (lambda: TinyViT(act=nn.GELU, torch_mha=False), 2),  # two MLPs
}
# Conv/Gemm/MatMul layers whose input edge_runtime's dispatch sees as zero-producing, in the
# exported original / relufied model (measured: sequential's ReLU6 feeds the pooled Linear only;
# MobileNetV3's SE has a ReLU already).
ZERO_FED = {"sequential": (0, 3), "mobilenet_v3": (1, 5), "resnet": (0, 4), "efficientnet": (0, 4),
            "yolo": (0, 4), "vit": (0, 2)}


@pytest.mark.parametrize("original", [nn.SiLU(), nn.Hardswish(), nn.GELU(), nn.ReLU6(), HSwish()])
@pytest.mark.parametrize("k_steps", [0, 1, 3])
def test_blend_forward_and_backward_match_formula(original, k_steps):
    blend = ActivationBlend(original, nn.ReLU(), ramp_steps=4)
    for _ in range(k_steps):
        blend.step()
    k = k_steps / 4
    z = torch.linspace(-8, 8, 101, requires_grad=True)
    blend(z).sum().backward()
    z2 = z.detach().clone().requires_grad_(True)
    expected = (1 - k) * original(z2) + k * torch.relu(z2)
    expected.sum().backward()
    assert torch.allclose(blend(z.detach()), expected.detach(), atol=1e-6)
    assert torch.allclose(z.grad, z2.grad, atol=1e-6)


def test_replacements_forward_and_backward():
    z = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
    JSquaredReLU()(z).sum().backward()
    assert z.grad.tolist() == [0.0, 0.0, 1.5, 3.0]  # z + 1 above zero
    z.grad = None
    blend = ActivationBlend(nn.GELU(), JSquaredReLU(), ramp_steps=0)
    assert blend.done and blend(z).tolist() == [0.0, 0.0, 0.625, 4.0]


def test_blend_schedule_ramps_then_swaps_to_plain_modules():
    s = sparsify(sequential_cnn(), "relufy", ramp_steps=3)
    x = torch.randn(4, 3, 8, 8)
    ks = []
    for _ in range(3):
        ks.append(sorted({round(b.k, 3) for b in s.blends.values()}))
        s.model(x)
        s.loss().backward()
        s.after_step()
    assert ks == [[0.0], [0.333], [0.667]]
    assert not s.blends and not any(isinstance(m, ActivationBlend) for m in s.model.modules())
    assert [type(s.model[i]).__name__ for i in (2, 4, 6, 10)] == ["ReLU", "ReLU", "ReLU", "ReLU"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_gets_its_replacements(family):
    make, count = FAMILIES[family]
    s = sparsify(make(), "relufy")
    assert len(s.blends) == count, sorted(s.blends)
    model = s.finalize()
    smooth = (nn.SiLU, nn.Hardswish, nn.GELU, nn.ReLU6, HSwish)
    assert not any(isinstance(m, smooth + (ActivationBlend,)) for m in model.modules())
    news = [type(model.get_submodule(n)) for n in s.activation_names]
    assert set(news) == ({JSquaredReLU} if family == "vit" else {nn.ReLU})
    gates = [m.gate for m in model.modules() if isinstance(m, SE)]
    assert all(isinstance(g, (nn.Hardsigmoid, nn.Sigmoid)) for g in gates)  # SE gates kept


def test_self_gated_detection():
    assert is_self_gated(HSwish())
    assert not is_self_gated(SE(8, 4, nn.Hardsigmoid))  # has parameters
    assert not is_self_gated(nn.Hardsigmoid())
    assert not is_self_gated(nn.Sequential(nn.Sigmoid()))  # sigmoid(x), not x * sigmoid(x)


def test_teacher_is_the_frozen_original():
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
    s = sparsify(model, "relufy", ramp_steps=0)
    assert s.model is model and not s.blends  # ramp 0: plain ReLU at once
    assert all(not p.requires_grad for p in s.teacher.parameters())
    assert torch.equal(s.teacher(x), before)
    assert not torch.equal(model(x), before)


def test_distillation_loss_values_and_errors():
    t = torch.tensor([[3.0, 0.0, -1.0]])
    assert float(distillation_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    s = torch.zeros(1, 3, requires_grad=True)
    loss = distillation_loss(s, t, temperature=2.0)
    loss.backward()
    assert float(loss) > 0 and int(s.grad.argmin()) == 0  # pushes the student towards class 0
    fmap = torch.randn(2, 4, 3, 3)
    assert float(distillation_loss(fmap + 1.0, fmap)) == pytest.approx(1.0)  # MSE for feature maps
    assert float(distillation_loss((t, fmap), (t, fmap))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(SparsifyError, match="same shape"):
        distillation_loss(t, fmap)


def test_loss_labels_optional_and_errors():
    s = sparsify(sequential_cnn(), "relufy", ramp_steps=10)
    with pytest.raises(SparsifyError, match="no training-mode forward"):
        s.loss()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    out = s.model(x)
    ce = nn.functional.cross_entropy(out, y)
    assert float(s.loss(ce)) == pytest.approx(float(ce), abs=1e-5)  # k = 0: the student is the teacher
    no_kd = sparsify(sequential_cnn(), "relufy", distill_alpha=0.0)
    with pytest.raises(SparsifyError, match="distill_alpha=0"):
        no_kd.loss()
    with pytest.raises(SparsifyError, match="relufy needs"):
        sparsify(sequential_cnn(), "relufy", activation="mixed")
    with pytest.raises(SparsifyError, match="no .*SiLU"):
        sparsify(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "relufy")


def test_exposed_as_exporters_sparsify():
    assert exporters.sparsify is sparsify


def test_short_training_run_raises_sparsity():
    """SiLU outputs have no exact zeros; after the blend + distillation the ReLUs are sparse."""
    torch.manual_seed(0)
    x = torch.randn(256, 3, 8, 8)
    teacher_like = sequential_cnn()
    s = sparsify(teacher_like, "relufy", ramp_steps=20, include=("2", "4"))  # the two conv activations
    names = list(s.blends)
    before = activation_sparsity(s.model, x, names)["mean"]
    opt = torch.optim.Adam(s.model.parameters(), lr=3e-3)
    for i in range(30):
        s.model.train()
        s.model(x[(i * 32) % 256:(i * 32) % 256 + 32])
        loss = s.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.after_step()
    after = activation_sparsity(s.model, x, names)["mean"]
    with torch.no_grad():
        agree = (s.model.eval()(x).argmax(1) == s.teacher(x).argmax(1)).float().mean()
    assert before < 0.01 and after > 0.3, (before, after)
    assert float(agree) > 0.5


@pytest.mark.parametrize("family", ["yolo", "vit"])
def test_fit_thresholds_on_the_relufied_model(family):
    """After the blend: thresholds on the new ReLU / J-SquaredReLU reach the target (no budget)."""
    from exporters.thresholds import fit_thresholds

    torch.manual_seed(0)
    s = sparsify(FAMILIES[family][0]().eval(), "relufy", ramp_steps=0)
    model = s.finalize().eval()
    x = torch.randn(128, 3, 8, 8)
    res = fit_thresholds(model, x, target_sparsity=0.8, max_accuracy_drop=100.0)
    fed = {"yolo": {"stem.act", "down.act", "cv1.act", "m.act"},  # through split / cat; cv2.act feeds a mean
           "vit": {"blocks.0.mlp.act", "blocks.1.mlp.act"}}[family]
    assert set(res.sparsity) == fed
    assert min(res.sparsity.values()) > 0.75, res.sparsity
    assert res.shortfall_line() == "" or all(f.short_by < 0.05 for f in res.shortfall)


# -- export parity: PyTorch vs edge_runtime vs onnxruntime, and the runtime sees the zeros -------------

def _zero_fed_layers(proto) -> int:
    from edge_runtime.onnx_io import graph_from_model
    from edge_runtime.planner import optimize
    from edge_runtime.zeros import FUSED_SPARSE_OPS, zero_producing

    g = optimize(graph_from_model(proto))
    producers = g.producers()
    return sum(1 for n in g.nodes if n.op_type in FUSED_SPARSE_OPS and zero_producing(n.inputs[0], producers, g.initializers))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_parity_and_zero_detection(family):
    ort = pytest.importorskip("onnxruntime")
    from edge_runtime import InferenceSession
    from exporters.onnx_export import export_onnx, finalize

    torch.manual_seed(1)
    make, _ = FAMILIES[family]
    x = torch.randn(2, 3, 8, 8)
    s = sparsify(make().eval(), "relufy", ramp_steps=2)
    for _ in range(2):
        s.after_step()
    model = s.finalize().eval()
    with torch.no_grad():
        expected = model(x).numpy()
    proto = finalize(export_onnx(model, x))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"HardSwish", "Gelu", "Erf", "Tanh"}, ops
    got_ort = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {proto.graph.input[0].name: x.numpy()})[0]
    feed = {proto.graph.input[0].name: x.numpy()}
    got_edge = InferenceSession(proto.SerializeToString(), sparsity="auto").run(None, feed)[0]
    scale = float(np.abs(expected).max())
    for got in (got_ort, got_edge):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)
    before, after = ZERO_FED[family]
    assert _zero_fed_layers(proto) >= after > before
