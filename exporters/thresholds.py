"""Training-free activation thresholds at export (TEAL / CATS spirit, references.md §1).

``fit_thresholds(model, calib_data)`` finds every ReLU-family activation module whose
output feeds an ``nn.Linear`` / ``nn.Conv*`` (directly or through pooling/reshape ops),
and gives it a threshold ``t``: the quantile of its positive pre-activations that brings
the layer's output sparsity to ``target_sparsity`` on the calibration data. It returns a
*copy* of the model with :class:`~exporters.sparsity.FATReLU` modules installed (the
user's model is untouched), then checks a metric (labelled accuracy, or top-1 agreement
with the unthresholded model) and, while the drop exceeds ``max_accuracy_drop`` points,
backs off: the layer whose threshold alone costs the most halves its extra sparsity
(below ``min_extra_sparsity`` its threshold is dropped), until the drop is in budget.

FATReLU exports as GreaterOrEqual + Where, so stock onnxruntime and edge_runtime apply
the thresholds from the graph itself; the annotation's ``threshold`` field only records them.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))
    >>> res = fit_thresholds(net, torch.randn(256, 8), target_sparsity=0.8, max_accuracy_drop=100.0)
    >>> sorted(res.thresholds), round(res.sparsity["1"], 1)
    (['1'], 0.8)
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from exporters.activation_flow import find_fed_activations
from exporters.errors import ExportError
from exporters.sparsity import FATReLU, ShiftedReLU

log = logging.getLogger(__name__)

_MAX_VALUES = 2_000_000  # pre-activation values kept per layer (random subsample beyond)
SHORTFALL_TOLERANCE = 0.005  # a layer this close to the target counts as reaching it (quantile ties)


@dataclass(frozen=True)
class ThresholdConfig:
    """Knobs of :func:`fit_thresholds` beyond its main arguments."""

    min_extra_sparsity: float = 0.02  # a layer's extra target below this drops its threshold
    max_backoffs: int = 64  # back-off rounds before giving up on a layer-by-layer search
    batch_size: int = 256  # batch size when data is given as one tensor
    seed: int = 0  # subsampling of calibration values


@dataclass(frozen=True)
class Shortfall:
    """One activation whose sparsity ended below the requested target.

    Example:
        >>> Shortfall("relu1", target=0.9, reached=0.84, cause="accuracy budget").short_by
        0.06
    """

    layer: str
    target: float  # the requested target_sparsity
    reached: float  # sparsity with the chosen threshold, on the calibration data
    cause: str  # "accuracy budget" (backed off or dropped) or "calibration" (ties, upstream thresholds)

    @property
    def short_by(self) -> float:
        return round(self.target - self.reached, 6)


@dataclass
class ThresholdResult:
    """What :func:`fit_thresholds` chose and measured.

    Attributes:
        model: the thresholded copy (eval mode); the caller's model is unchanged.
        thresholds: activation module name -> threshold (float, or list per channel);
            layers whose threshold was dropped are absent.
        sparsity_before / sparsity: per-layer fraction of zeros of the activation output
            on the calibration data, without / with thresholds.
        targets: per-layer sparsity target after back-off (natural sparsity when dropped).
        metric_name: ``"accuracy"`` (labelled eval data) or ``"agreement"`` (top-1
            agreement with the unthresholded model), in percent.
        metric_before / metric_after: the metric without / with thresholds.
        backoffs: one entry per back-off step (layer, new target, metric after).
        consumers: activation name -> the Linear/Conv modules its output feeds.
    """

    model: nn.Module
    thresholds: dict[str, Any]
    sparsity_before: dict[str, float]
    sparsity: dict[str, float]
    targets: dict[str, float]
    metric_name: str
    metric_before: float
    metric_after: float
    backoffs: list[dict[str, Any]] = field(default_factory=list)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    target_sparsity: float | None = None  # what was asked; None for results built elsewhere

    @property
    def shortfall(self) -> list[Shortfall]:
        """Layers whose sparsity is below the requested target (by more than SHORTFALL_TOLERANCE)."""
        if self.target_sparsity is None:
            return []
        backed = {step["layer"] for step in self.backoffs}
        return [Shortfall(n, self.target_sparsity, float(s), "accuracy budget" if n in backed else "calibration")
                for n, s in self.sparsity.items() if s < self.target_sparsity - SHORTFALL_TOLERANCE]

    def shortfall_line(self) -> str:
        """One line naming each layer short of the target and by how much; "" when none is."""
        short = self.shortfall
        if not short:
            return ""
        worst = sorted(short, key=lambda f: -f.short_by)
        return (f"target sparsity {self.target_sparsity:.2f} not reached on {len(short)}/{len(self.sparsity)} "
                f"activations (mean {self.mean_sparsity:.3f}): "
                + ", ".join(f"{f.layer} {f.reached:.3f} (-{f.short_by:.3f}, {f.cause})" for f in worst))

    @property
    def mean_sparsity(self) -> float:
        """Unweighted mean over the candidate layers of the thresholded sparsity."""
        return float(np.mean(list(self.sparsity.values()))) if self.sparsity else 0.0

    @property
    def metric_drop(self) -> float:
        return self.metric_before - self.metric_after


# -- data handling ---------------------------------------------------------------------------

def _input_batches(data: Any, batch_size: int) -> list[torch.Tensor]:
    """Model-input batches from a tensor/array, (x, y) tuple, or an iterable of either."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        return list(data.split(batch_size))
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor) \
            and isinstance(data[1], torch.Tensor) and data[0].shape[0] == data[1].shape[0] and data[1].dim() == 1:
        return list(data[0].split(batch_size))
    out = []
    for b in data:
        out.append(b[0] if isinstance(b, (tuple, list)) else b)
    if not out or not all(isinstance(b, torch.Tensor) for b in out):
        raise ExportError(f"calibration data ({type(data).__name__}) gave no tensor batches; expected a "
                          "Tensor (N, ...), an (x, y) tuple or an iterable of Tensor / (x, y) batches")
    return out


def _labelled_batches(data: Any, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(x, y-or-None) batches; y is None when the data carries no labels."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, torch.Tensor) for d in data) \
            and data[1].dim() == 1 and data[0].shape[0] == data[1].shape[0]:
        return list(zip(data[0].split(batch_size), data[1].split(batch_size)))
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return [(x, None) for x in _input_batches(data, batch_size)]
    out = []
    for b in data:
        if isinstance(b, (tuple, list)) and len(b) >= 2:
            out.append((b[0], b[1]))
        else:
            out.append((b, None))
    if not out:
        raise ExportError("eval_data gave no batches; pass (x, y) tensors or an iterable of (x, y) batches")
    return out


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def _predict(model: nn.Module, batches: list[tuple[torch.Tensor, Any]]) -> torch.Tensor:
    return torch.cat([_logits(model(x)).argmax(-1).reshape(-1) for x, _ in batches])


def _metric(model: nn.Module, batches: list[tuple[torch.Tensor, Any]], reference: torch.Tensor) -> float:
    """Percent of predictions equal to ``reference`` (labels, or the base model's top-1)."""
    return 100.0 * float((_predict(model, batches) == reference).float().mean())


# -- calibration values and quantiles ----------------------------------------------------------

@dataclass
class _Layer:
    """One candidate activation: its pre-activation sample and derived statistics."""

    name: str
    original: nn.Module
    channel_dim: int | None  # None: one threshold per layer
    values: np.ndarray  # (C, M) per channel, (1, M) per layer
    base_t: np.ndarray  # the original module's own threshold (0 unless it was a FATReLU)

    def natural_sparsity(self) -> np.ndarray:
        """Per row, the fraction of outputs that are zero without a new threshold."""
        return ((self.values <= 0) | (self.values < self.base_t[:, None])).mean(axis=1)

    def threshold_for(self, target: float) -> np.ndarray:
        """Per row, the smallest threshold whose zeros reach ``target`` (>= base_t)."""
        out = self.base_t.copy()
        s0 = self.natural_sparsity()
        for c in range(self.values.shape[0]):
            if s0[c] >= target:
                continue
            v = self.values[c]
            pos = v[(v > 0) & (v >= self.base_t[c])]  # what passes today; the rest is counted in s0
            if pos.size:
                q = (target - s0[c]) / (1.0 - s0[c])
                out[c] = max(out[c], float(np.quantile(pos, min(q, 1.0))))
        return out


def _collect(model: nn.Module, names: dict[str, int | None], batches: list[torch.Tensor],
             seed: int) -> dict[str, np.ndarray]:
    """Each activation's pre-activation values as (C, M) / (1, M), subsampled per batch."""
    per_batch = max(1, _MAX_VALUES // len(batches))
    rng = np.random.default_rng(seed)
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def hook_for(name: str):
        def hook(_m: nn.Module, args: tuple) -> None:
            z = args[0].detach().float()
            cdim = names[name]
            v = z.movedim(cdim % z.dim(), 0).reshape(z.shape[cdim], -1) if cdim is not None else z.reshape(1, -1)
            v = v.numpy().copy()  # copy: an in-place activation overwrites z afterwards
            cols = per_batch // v.shape[0]
            if v.shape[1] > cols:
                v = v[:, rng.choice(v.shape[1], max(cols, 1), replace=False)]
            chunks[name].append(v)
        return hook

    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: np.concatenate(c, axis=1) for n, c in chunks.items() if c}


# -- installing thresholds -------------------------------------------------------------------

def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _fat_for(layer: _Layer) -> nn.Module:
    """A FATReLU (threshold set later) computing ``original`` with an extra threshold."""
    old = layer.original
    c = layer.values.shape[0] if layer.channel_dim is not None else None
    cdim = layer.channel_dim if layer.channel_dim is not None else -1
    if isinstance(old, (nn.ReLU, nn.ReLU6, FATReLU)) and not isinstance(old, ShiftedReLU):
        cap = 6.0 if isinstance(old, nn.ReLU6) else getattr(old, "cap", None)
        return FATReLU(0.0, num_channels=c, channel_dim=cdim, cap=cap)
    # JSquaredReLU / MixedActivation / ShiftedReLU map 0 to 0: zero the input below t, then apply them
    return nn.Sequential(FATReLU(0.0, num_channels=c, channel_dim=cdim), copy.deepcopy(old))


def _write_threshold(module: nn.Module, t: np.ndarray) -> None:
    fat = module if isinstance(module, FATReLU) else module[0]
    value = torch.tensor(t if fat.per_channel else t[0], dtype=fat.threshold.dtype)
    with torch.no_grad():
        fat.threshold.copy_(value.reshape(fat.threshold.shape))


def _make_layers(model: nn.Module, fed: dict[str, list[str]], batches: list[torch.Tensor],
                 per_channel: bool, seed: int) -> dict[str, _Layer]:
    mods = dict(model.named_modules())
    dims: dict[str, int | None] = {}
    for name, cons in fed.items():
        conv = any(not isinstance(mods[c], nn.Linear) for c in cons)
        dims[name] = (1 if conv else -1) if per_channel else None
        if isinstance(mods[name], FATReLU) and mods[name].per_channel:
            dims[name] = mods[name].channel_dim  # keep the user's per-channel thresholds
    values = _collect(model, dims, batches, seed)
    layers = {}
    for name, v in values.items():
        old = mods[name]
        base = np.zeros(v.shape[0], np.float32)
        if isinstance(old, FATReLU):
            t0 = old.threshold.detach().numpy().reshape(-1)
            base = np.broadcast_to(t0 if (t0.size == v.shape[0]) else t0.max(), v.shape[:1]).astype(np.float32)
        layers[name] = _Layer(name, old, dims[name], v, base.copy())
    return layers


class _Workbench:
    """A copy of the model with a FATReLU at every candidate; sequential calibration and metrics.

    Thresholds are calibrated in execution order with the earlier layers' thresholds in
    place: a threshold upstream shrinks the pre-activations downstream, so quantiles taken
    on the unthresholded model overshoot the target in later layers.
    """

    def __init__(self, model: nn.Module, layers: dict[str, _Layer], calib: list[torch.Tensor],
                 evals: list, reference: torch.Tensor, seed: int) -> None:
        self.model, self.layers, self.calib, self.evals = model, layers, calib, evals
        self.reference, self.seed, self.order = reference, seed, list(layers)
        self.modules = {n: _fat_for(layer) for n, layer in layers.items()}
        for n, m in self.modules.items():
            _set_submodule(model, n, m)
        self.model.eval()

    def _write(self, thresholds: dict[str, np.ndarray]) -> None:
        for n, layer in self.layers.items():
            _write_threshold(self.modules[n], thresholds.get(n, layer.base_t))

    def calibrate(self, thr: dict[str, np.ndarray], targets: dict[str, float], start: int = 0) -> None:
        """Recompute ``thr`` (in place) for the layers from ``start`` on, in execution order."""
        for name in self.order[start:]:
            thr.pop(name, None)
            self._write(thr)
            layer = self.layers[name]
            layer.values = _collect(self.model, {name: layer.channel_dim}, self.calib, self.seed)[name]
            t = layer.threshold_for(targets[name])
            if np.any(t > layer.base_t):  # else already sparse enough: no threshold
                thr[name] = t

    def metric(self, thresholds: dict[str, np.ndarray]) -> float:
        """The metric with ``thresholds`` (layers absent run at their base threshold)."""
        self._write(thresholds)
        return _metric(self.model, self.evals, self.reference)

    def finish(self, thresholds: dict[str, np.ndarray]) -> nn.Module:
        """Write the final thresholds; layers without one get their original module back."""
        self._write(thresholds)
        for n, layer in self.layers.items():
            if n not in thresholds:
                _set_submodule(self.model, n, layer.original)
        return self.model


# -- the search --------------------------------------------------------------------------------

def _check_args(target_sparsity: float, max_accuracy_drop: float) -> None:
    if not 0.0 < target_sparsity < 1.0:
        raise ExportError(f"target_sparsity={target_sparsity}; expected a fraction of zeros in (0, 1), "
                          "e.g. 0.9")
    if max_accuracy_drop < 0:
        raise ExportError(f"max_accuracy_drop={max_accuracy_drop}; expected >= 0 percentage points, e.g. 0.5")


def _reference(base: nn.Module, eval_batches: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, str]:
    """Labels when every eval batch has them, else the base model's top-1 predictions."""
    if all(y is not None for _, y in eval_batches):
        return torch.cat([torch.as_tensor(y).reshape(-1) for _, y in eval_batches]), "accuracy"
    return _predict(base, eval_batches), "agreement"


def _back_off(bench: _Workbench, thr: dict[str, np.ndarray], targets: dict[str, float],
              natural: dict[str, float], before: float, budget: float,
              cfg: ThresholdConfig) -> tuple[float, list[dict[str, Any]]]:
    """Relax the costliest layer's threshold until the metric drop is within ``budget``."""
    after = bench.metric(thr)
    costs: dict[str, float] = {}
    steps: list[dict[str, Any]] = []
    while before - after > budget and thr and len(steps) < cfg.max_backoffs:
        for n in thr:
            if n not in costs:
                costs[n] = before - bench.metric({n: thr[n]})  # this layer's threshold alone
        name = max(thr, key=lambda n: (costs[n], targets[n] - natural[n]))
        extra = (targets[name] - natural[name]) / 2.0
        targets[name] = natural[name] + extra if extra >= cfg.min_extra_sparsity else 0.0
        k = bench.order.index(name)
        bench.calibrate(thr, targets, k)  # this layer and everything after it
        for n in bench.order[k:]:
            costs.pop(n, None)
        after = bench.metric(thr)
        steps.append({"layer": name, "action": "halved" if targets[name] else "dropped",
                      "target": targets[name], "metric_after": after})
        log.info("fit_thresholds: %s %s; target %.3f, metric %.2f", steps[-1]["action"], name,
                 targets[name], after)
    if before - after > budget:
        log.warning("fit_thresholds: metric drop %.2f still exceeds %.2f after %d back-offs",
                    before - after, budget, len(steps))
    return after, steps


def fit_thresholds(model: nn.Module, calib_data: Any, *, target_sparsity: float = 0.9,
                   max_accuracy_drop: float = 0.5, eval_data: Any = None, per_channel: bool = False,
                   config: ThresholdConfig = ThresholdConfig()) -> ThresholdResult:
    """Choose FATReLU thresholds that reach ``target_sparsity`` within an accuracy budget.

    Args:
        model: a PyTorch model with ReLU-family activation modules feeding Linear/Conv
            layers. It is deep-copied; the original is not modified.
        calib_data: model inputs for the quantiles: a Tensor (N, ...), an (x, y) tuple
            or an iterable of Tensor / (x, y) batches (labels ignored).
        target_sparsity: wanted fraction of zeros of each candidate activation output.
        max_accuracy_drop: allowed metric drop in percentage points.
        eval_data: labelled data (x, y) (or an iterable of (x, y) batches) for accuracy;
            unlabelled inputs, or None (= ``calib_data``), make the metric the top-1
            agreement with the unthresholded model.
        per_channel: one threshold per channel (conv) / hidden unit (Linear) instead of
            one per layer.
        config: back-off and batching knobs.

    Returns:
        A :class:`ThresholdResult` with the thresholded copy and what was measured;
        ``.shortfall`` lists the layers below the target and by how much (also logged
        as one warning line, ``.shortfall_line()``).

    Raises:
        ExportError: bad arguments, no data, or no ReLU-family activation module that
            feeds a Linear/Conv.
    """
    _check_args(target_sparsity, max_accuracy_drop)
    base = copy.deepcopy(model).eval()
    calib = _input_batches(calib_data, config.batch_size)
    evals = _labelled_batches(eval_data if eval_data is not None else calib_data, config.batch_size)
    fed = find_fed_activations(base, calib[0])
    if not fed:
        raise ExportError(f"fit_thresholds found no ReLU-family activation module feeding a Linear/Conv in "
                          f"{type(model).__name__}; expected nn.ReLU/ReLU6/FATReLU modules (functional F.relu "
                          "calls cannot be replaced)")
    layers = _make_layers(base, fed, calib, per_channel, config.seed)
    natural = {n: float(layer.natural_sparsity().mean()) for n, layer in layers.items()}
    reference, metric_name = _reference(base, evals)
    before = _metric(base, evals, reference)
    bench = _Workbench(copy.deepcopy(base), layers, calib, evals, reference, config.seed)
    targets = dict.fromkeys(layers, target_sparsity)
    thr: dict[str, np.ndarray] = {}
    bench.calibrate(thr, targets)
    after, steps = _back_off(bench, thr, targets, natural, before, max_accuracy_drop, config)
    thresholded = bench.finish(thr)
    result = ThresholdResult(
        model=thresholded,
        thresholds={n: (t.tolist() if layers[n].channel_dim is not None else float(t[0])) for n, t in thr.items()},
        sparsity_before=_sparsity(base, calib, list(layers)), sparsity=_sparsity(thresholded, calib, list(layers)),
        targets={n: targets[n] if n in thr else natural[n] for n in layers}, metric_name=metric_name,
        metric_before=before, metric_after=after, backoffs=steps, consumers=fed, target_sparsity=target_sparsity)
    if result.shortfall:
        log.warning("fit_thresholds: %s", result.shortfall_line())
    return result


def _sparsity(model: nn.Module, batches: list[torch.Tensor], names: list[str]) -> dict[str, float]:
    from exporters.sparsity import activation_sparsity

    out = activation_sparsity(model, batches, names)
    out.pop("mean")
    return out
