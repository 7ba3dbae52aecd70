"""FATReLU, calibration of its thresholds, and the activation L1 regulariser.

Kurtz et al. 2020, "Inducing and Exploiting Activation Sparsity for Fast Neural Network
Inference" (ICML; docs/references.md §1): ``f(x) = x if x >= t else 0`` with a per-layer
or per-channel threshold ``t``, plus ``loss + alpha * |a|`` on chosen layers.

Export form: ``Where(x >= t, x, 0)`` (ONNX GreaterOrEqual + Where; for ReLU6 a Clip
or Min follows). Both are stock ONNX ops that every runtime executes, and the output
has exact zeros, so the runtime's neuron skipping sees them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from exporters.sparsity.errors import SparsifyError

log = logging.getLogger(__name__)

_MAX_CALIBRATION_VALUES = 1 << 22  # torch.quantile refuses inputs over 16M elements


class FATReLU(nn.Module):
    """Forced-activation-threshold ReLU: ``x if x >= t else 0`` (optionally capped).

    Args:
        threshold: initial threshold ``t >= 0`` (0 makes it exactly ReLU).
        num_channels: ``None`` for one per-layer threshold, else the channel count for
            per-channel thresholds.
        channel_dim: the channel axis of the input: 1 for conv ``(N, C, H, W)``, -1 for
            MLP ``(..., H)``.
        learnable: train ``t``; in training mode a straight-through sigmoid surrogate
            gives ``t`` a gradient (the forward value is unchanged).
        cap: upper clamp, e.g. 6.0 to replace ReLU6; ``None`` for no cap.
        temperature: width of the surrogate sigmoid for learnable thresholds, in units
            of the activation.

    Raises:
        SparsifyError: on a negative threshold or non-positive channel count.

    Example:
        >>> FATReLU(threshold=1.0)(torch.tensor([-1.0, 0.5, 1.0, 3.0])).tolist()
        [0.0, 0.0, 1.0, 3.0]
    """

    def __init__(self, threshold: float = 0.0, num_channels: int | None = None,
                 channel_dim: int = -1, learnable: bool = False, cap: float | None = None,
                 temperature: float = 0.1) -> None:
        super().__init__()
        if threshold < 0:
            raise SparsifyError(f"FATReLU threshold must be >= 0, got {threshold}; use 0 for plain ReLU")
        if num_channels is not None and num_channels <= 0:
            raise SparsifyError(f"FATReLU num_channels must be positive or None, got {num_channels}")
        shape = () if num_channels is None else (num_channels,)
        t = torch.full(shape, float(threshold))
        if learnable:
            self.threshold = nn.Parameter(t)
        else:
            self.register_buffer("threshold", t)
        self.channel_dim = channel_dim
        self.learnable = learnable
        self.cap = cap
        self.temperature = temperature

    @property
    def per_channel(self) -> bool:
        return self.threshold.dim() == 1

    def _broadcast_threshold(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return self.threshold
        cdim = self.channel_dim % x.dim()
        # a traced export sees shapes as tensors: checked in eager runs (calibration runs one before export)
        if not torch.jit.is_tracing() and x.shape[cdim] != self.threshold.shape[0]:
            raise SparsifyError(
                f"FATReLU has {self.threshold.shape[0]} per-channel thresholds but the input "
                f"{tuple(x.shape)} has {x.shape[cdim]} channels on dim {self.channel_dim}; "
                "set channel_dim to the channel axis or use a per-layer threshold"
            )
        shape = [1] * x.dim()
        shape[cdim] = -1
        return self.threshold.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._broadcast_threshold(x).to(x.dtype)
        out = torch.where(x >= t, x, torch.zeros((), dtype=x.dtype, device=x.device))
        if self.learnable and self.training and torch.is_grad_enabled():
            soft = torch.sigmoid((x.detach() - t) / self.temperature)
            out = out + x.detach() * (soft - soft.detach())  # value 0, gradient for t only
        if self.cap is not None:
            out = out.clamp(max=self.cap)
        return out

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep learnable thresholds non-negative (a negative ``t`` would pass negatives)."""
        if self.learnable:
            self.threshold.clamp_(min=0.0)

    def extra_repr(self) -> str:
        kind = f"per_channel={self.threshold.shape[0]}" if self.per_channel else "per_layer"
        return f"{kind}, channel_dim={self.channel_dim}, learnable={self.learnable}, cap={self.cap}"


class ShiftedReLU(FATReLU):
    """Shifted ReLU: ``max(x - t, 0)``, zero exactly where FATReLU with threshold ``t`` is zero.

    FATReLU's ``x if x >= t else 0`` exports as GreaterOrEqual + Where, which breaks
    onnxruntime's Conv+Relu fusion (measured: a 4-conv Fashion-MNIST net 1.69 ms with ReLU, 2.19 ms
    with Where, 1 thread). ``x - t`` is a bias: the exporter folds the Sub into the producing Conv's
    bias (``exporters.onnx_export.fold_bias_shifts``), so the deployed graph is plain Conv + Relu
    with a lower bias and the same zeros. The shift changes the active values by ``t``; the network
    adapts to it while fine-tuning (``target_sparsity`` anneals ``t``, exporters/sparsity/anneal.py).
    Same arguments as :class:`FATReLU`; learnable thresholds get their natural gradient.

    Example:
        >>> ShiftedReLU(threshold=1.0)(torch.tensor([-1.0, 0.5, 1.0, 3.0])).tolist()
        [0.0, 0.0, 0.0, 2.0]
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x - self._broadcast_threshold(x).to(x.dtype))
        return out.clamp(max=self.cap) if self.cap is not None else out


def run_hooked(model: nn.Module, data: torch.Tensor | Iterable, handles: list) -> None:
    """Run ``data`` through ``model`` in eval mode without gradients, then remove the hook
    ``handles`` and restore the model's train/eval mode (also when the forward pass fails)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for args in _batches(data):
                model(*args)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def _batches(data: torch.Tensor | Iterable) -> Iterator[tuple]:
    """Yield model argument tuples from one tensor or an iterable of tensors/tuples."""
    if isinstance(data, torch.Tensor):
        yield (data,)
        return
    for batch in data:
        if isinstance(batch, torch.Tensor):
            yield (batch,)
        elif isinstance(batch, (tuple, list)):
            yield tuple(batch)
        else:
            raise SparsifyError(
                f"calibration batch has type {type(batch).__name__}; expected a Tensor or a "
                "tuple/list of model inputs (labels excluded)"
            )


def _collect_inputs(model: nn.Module, modules: dict[str, nn.Module],
                    data: torch.Tensor | Iterable) -> dict[str, list[torch.Tensor]]:
    """Run ``data`` through ``model`` (eval, no grad) and keep each module's inputs."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def hook_for(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            seen[name].append(args[0].detach())
        return hook

    run_hooked(model, data, [m.register_forward_pre_hook(hook_for(n)) for n, m in modules.items()])
    return seen


def _values(inputs: list[torch.Tensor], fat: FATReLU) -> torch.Tensor:
    """Flatten calibration inputs to (channels, samples) or (1, samples), subsampled."""
    if fat.per_channel:
        rows = [x.movedim(fat.channel_dim % x.dim(), 0).reshape(x.shape[fat.channel_dim], -1) for x in inputs]
        if len({r.shape[0] for r in rows}) != 1:
            raise SparsifyError(
                "a per-channel FATReLU saw inputs with different channel counts "
                f"{sorted({r.shape[0] for r in rows})} (a module used at several places); "
                "use per-layer thresholds for shared activation modules"
            )
        vals = torch.cat(rows, dim=1)  # (C, N)
    else:
        vals = torch.cat([x.reshape(1, -1) for x in inputs], dim=1)  # (1, N)
    limit = _MAX_CALIBRATION_VALUES // vals.shape[0]
    if vals.shape[1] > limit:
        gen = torch.Generator().manual_seed(0)
        vals = vals[:, torch.randperm(vals.shape[1], generator=gen)[:limit]]
    return vals.float()


def choose_thresholds(model: nn.Module, data: torch.Tensor | Iterable,
                      target_sparsity: float) -> dict[str, torch.Tensor]:
    """Set every FATReLU threshold so its output has ``target_sparsity`` on ``data``.

    Each threshold is the ``target_sparsity`` quantile of that layer's (or channel's)
    inputs on the calibration data, floored at 0. A layer whose plain-ReLU sparsity
    already exceeds the target keeps ``t = 0`` (a negative threshold would let negative
    values through).

    Args:
        model: a model containing :class:`FATReLU` modules (e.g. after ``sparsify``).
        data: a Tensor (one batch) or an iterable of batches (Tensor or tuple of inputs).
        target_sparsity: wanted fraction of zeros in [0, 1).

    Returns:
        The chosen thresholds by module name (also written into the modules).

    Raises:
        SparsifyError: on a target outside [0, 1), a model without FATReLU, or no data.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 16), FATReLU())
        >>> t = choose_thresholds(m, torch.randn(64, 4), 0.8)
        >>> sorted(t)
        ['1']
    """
    if not 0.0 <= target_sparsity < 1.0:
        raise SparsifyError(f"target_sparsity must be in [0, 1), got {target_sparsity}; e.g. 0.7 for 70% zeros")
    fats = {n: m for n, m in model.named_modules() if isinstance(m, FATReLU)}
    if not fats:
        raise SparsifyError(
            "choose_thresholds found no FATReLU in the model; call sparsify(model, 'fatrelu') first"
        )
    seen = _collect_inputs(model, fats, data)
    chosen: dict[str, torch.Tensor] = {}
    for name, fat in fats.items():
        if not seen[name]:
            raise SparsifyError(
                f"FATReLU {name!r} never ran on the calibration data; pass at least one batch "
                "that reaches it"
            )
        q = torch.quantile(_values(seen[name], fat), target_sparsity, dim=1)  # (C,) or (1,)
        t = q.clamp(min=0.0)
        if bool((q < 0).any()):
            log.info("FATReLU %s: ReLU alone already exceeds sparsity %.3f on some channels",
                     name, target_sparsity)
        t = t if fat.per_channel else t.reshape(())
        with torch.no_grad():
            fat.threshold.copy_(t.to(fat.threshold.dtype))
        chosen[name] = fat.threshold.detach().clone()
    return chosen


class ActivationL1:
    """Activation L1 regulariser: ``alpha * sum over layers of mean |a|`` (Kurtz et al.).

    Forward hooks on the chosen modules record ``mean |output|`` on every training-mode
    forward; :meth:`penalty` returns ``alpha`` times their sum and starts a new
    accumulation. Call it once per optimizer step, after the forward pass(es).

    Args:
        modules: the activation modules to regularise, by name.
        alpha: regularisation strength.

    Raises:
        SparsifyError: if ``alpha`` is negative.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        >>> l1 = ActivationL1({"1": m[1]}, alpha=1e-3)
        >>> _ = m(torch.randn(2, 4)); float(l1.penalty().detach()) > 0
        True
    """

    def __init__(self, modules: dict[str, nn.Module], alpha: float) -> None:
        if alpha < 0:
            raise SparsifyError(f"L1 alpha must be >= 0, got {alpha}; typical values are 1e-5..1e-3")
        self.alpha = alpha
        self.names = list(modules)
        self._terms: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in modules.values()]

    def _hook(self, module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled():
            self._terms.append(out.abs().mean())

    def penalty(self) -> torch.Tensor:
        """Return ``alpha * sum(mean |a|)`` over recorded forwards and clear them."""
        terms, self._terms = self._terms, []
        if not terms or self.alpha == 0.0:
            return torch.zeros(())
        return self.alpha * torch.stack(terms).sum()

    def remove(self) -> None:
        """Detach the hooks; the regulariser records nothing afterwards."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._terms = []
