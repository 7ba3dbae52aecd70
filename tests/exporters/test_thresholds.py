"""fit_thresholds: target sparsity on held-out data, back-off under a tight budget, the
user's model untouched, and the exported thresholds seen identically by PyTorch,
edge_runtime (sparsity="auto") and onnxruntime."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from exporters.errors import ExportError
from exporters.sparsity import FATReLU, activation_sparsity
from exporters.activation_flow import find_fed_activations
from exporters.thresholds import ThresholdResult, fit_thresholds


@pytest.fixture(autouse=True)
def _one_thread_fixed_seed():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many agents share 2 cores
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU6(), nn.Linear(32, 10),
    ).eval()


def trained_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 2-hidden-layer MLP fitted to a linear 4-class rule (about 95% accuracy)."""
    x = torch.randn(1200, 16)
    y = (x @ torch.randn(16, 4)).argmax(1)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x[:800]), y[:800])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x, y


@pytest.fixture(scope="module")
def cnn_result() -> tuple[nn.Module, ThresholdResult, torch.Tensor]:
    torch.manual_seed(0)
    model = small_cnn()
    calib = torch.randn(256, 1, 14, 14)
    result = fit_thresholds(model, calib, target_sparsity=0.9, max_accuracy_drop=100.0)
    return model, result, calib


def test_finds_activations_that_feed_linear_or_conv_through_pooling():
    fed = find_fed_activations(small_cnn(), torch.randn(2, 1, 14, 14))
    assert fed == {"1": ["3"], "5": ["7"], "8": ["9"]}


def test_reaches_target_sparsity_on_held_out_data(cnn_result):
    _, result, _ = cnn_result
    held_out = torch.randn(256, 1, 14, 14)
    measured = activation_sparsity(result.model, held_out, ["1", "5", "8"])
    for name in ("1", "5", "8"):
        assert isinstance(result.model.get_submodule(name), FATReLU), name
        assert abs(result.sparsity[name] - 0.9) < 0.01, (name, result.sparsity)
        assert abs(measured[name] - 0.9) < 0.03, (name, measured)
    assert result.model.get_submodule("8").cap == 6.0  # ReLU6 keeps its cap
    assert result.backoffs == []  # budget 100 points: nothing backed off


def test_per_channel_thresholds_reach_target_per_channel():
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)).eval()
    with torch.no_grad():
        model[0].bias.copy_(torch.linspace(-2, 2, 32))  # channels with very different natural sparsity
    x = torch.randn(4000, 8)
    result = fit_thresholds(model, x, target_sparsity=0.8, max_accuracy_drop=100.0, per_channel=True)
    assert len(result.thresholds["1"]) == 32
    out = result.model[:2](x)  # (N, 32) after the FATReLU
    per_channel = (out == 0).float().mean(0)
    assert torch.all(per_channel >= 0.8 - 0.05), per_channel  # channels already sparser stay so


def test_backs_off_when_the_budget_is_tight(caplog):
    model, x, y = trained_mlp()
    loose = fit_thresholds(model, x[:800], target_sparsity=0.97, max_accuracy_drop=100.0,
                           eval_data=(x[800:], y[800:]))
    assert loose.metric_name == "accuracy"
    assert loose.metric_drop > 3.0, loose.metric_drop  # 97% zeros hurts: back-off is needed
    with caplog.at_level("WARNING", logger="exporters.thresholds"):
        tight = fit_thresholds(model, x[:800], target_sparsity=0.97, max_accuracy_drop=1.0,
                               eval_data=(x[800:], y[800:]))
    assert tight.backoffs, "expected at least one back-off step"
    # the shortfall report: every backed-off layer, its target, what it reached and by how much
    short = {f.layer: f for f in tight.shortfall}
    assert {b["layer"] for b in tight.backoffs} <= set(short), (tight.backoffs, short)
    for f in short.values():
        assert f.target == 0.97 and f.reached == pytest.approx(tight.sparsity[f.layer])
        assert f.short_by == pytest.approx(0.97 - f.reached, abs=1e-6) and f.short_by > 0.005
        assert f.cause == "accuracy budget"
    assert "target sparsity 0.97 not reached" in tight.shortfall_line()
    assert tight.shortfall_line() in caplog.text
    assert all(f.cause == "calibration" for f in loose.shortfall)
    assert tight.metric_drop <= 1.0 + 1e-9
    assert tight.metric_before == pytest.approx(loose.metric_before)
    assert min(tight.targets.values()) < 0.97
    assert tight.mean_sparsity < loose.mean_sparsity
    assert tight.mean_sparsity > max(tight.sparsity_before.values())  # not simply everything dropped


def test_raises_an_existing_fatrelu_threshold_to_the_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 256), FATReLU(0.5), nn.Linear(256, 4)).eval()
    x = torch.randn(2000, 16)
    result = fit_thresholds(model, x, target_sparsity=0.9, max_accuracy_drop=100.0)
    assert result.sparsity_before["1"] < 0.85  # the existing threshold alone
    assert result.sparsity["1"] == pytest.approx(0.9, abs=0.01)
    assert result.thresholds["1"] > 0.5 and not result.shortfall


def test_agreement_metric_without_labels():
    model, x, _ = trained_mlp()
    result = fit_thresholds(model, x[:400], target_sparsity=0.9, max_accuracy_drop=2.0)
    assert result.metric_name == "agreement"
    assert result.metric_before == 100.0
    assert result.metric_after >= 98.0


def test_user_model_is_unchanged(cnn_result):
    model, result, calib = cnn_result
    fresh = small_cnn()  # same seed as the fixture's model: same initial weights
    assert [type(m) for m in model] == [type(m) for m in fresh]
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    assert result.model is not model
    with torch.no_grad():
        assert not torch.equal(model(calib), result.model(calib))


def test_rejects_bad_arguments():
    model = small_cnn()
    with pytest.raises(ExportError, match="target_sparsity"):
        fit_thresholds(model, torch.randn(4, 1, 14, 14), target_sparsity=1.0)
    with pytest.raises(ExportError, match="no ReLU-family"):
        fit_thresholds(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), torch.randn(4, 4))


@pytest.fixture(scope="module")
def exported(cnn_result):
    from exporters import export

    _, result, calib = cnn_result
    out = os.path.join(tempfile.mkdtemp(), "bundle")
    bundle = export(result.model, calib[:1], out, formats=("onnx",), calibration=calib)
    return result, bundle, calib


def _torch_input_densities(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, float]:
    dens: dict[str, float] = {}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_pre_hook(
        lambda _m, a, n=n: dens.__setitem__(n, float((a[0] != 0).float().mean()))) for n in names]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return dens


def test_exported_thresholds_give_the_same_input_density_in_edge_runtime(exported):
    from edge_runtime import InferenceSession
    from edge_runtime.annotations import read_annotations

    result, bundle, calib = exported
    proto = onnx.load(bundle.onnx_path)
    assert {"GreaterOrEqual", "Where"} <= {n.op_type for n in proto.graph.node}
    node_of = {layer["module"]: layer["node"] for layer in read_annotations(proto)["layers"]}
    x = calib[:8]
    expected = _torch_input_densities(result.model, x, ["3", "7", "9"])
    # force: every layer a sparse kernel supports measures its input (auto keeps tiny layers dense)
    session = InferenceSession(str(bundle.onnx_path), sparsity="force")
    _, stats = session.run_with_stats(None, {session.get_inputs()[0].name: x.numpy()})
    got = {n.name: n.density for n in stats.nodes}
    for module in ("3", "7", "9"):
        assert got[node_of[module]] is not None, f"{module} is not a sparse candidate in edge_runtime"
        assert abs(got[node_of[module]] - expected[module]) <= 0.01, (module, got[node_of[module]], expected)
    assert expected["7"] < 0.15  # the thresholds really are in the graph


def test_edge_runtime_auto_matches_onnxruntime(exported):
    ort = pytest.importorskip("onnxruntime")
    from edge_runtime import InferenceSession

    result, bundle, calib = exported
    x = calib[:8].numpy()
    edge = InferenceSession(str(bundle.onnx_path), sparsity="auto")
    ref = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    name = ref.get_inputs()[0].name
    got = edge.run(None, {name: x})[0]
    want = ref.run(None, {name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    with torch.no_grad():
        torch_out = result.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, torch_out, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(torch_out).max())))
