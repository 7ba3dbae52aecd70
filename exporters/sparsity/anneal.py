"""Threshold annealing: raise FATReLU thresholds *during* fine-tuning towards a target sparsity.

Thresholds set once after training (``choose_thresholds`` / ``fit_thresholds``) cost accuracy
the network never gets to recover: measured on the relufied Fashion-MNIST models, 80% sparsity
from post-hoc thresholds cost 11-14 points. Annealing moves the thresholds a little every
optimizer step while the fine-tune (with distillation) keeps running, so the weights adapt
to each layer's thresholds as they rise (Kurtz et al. 2020 raise sparsity gradually for the
same reason; ProSparse raises its L1 pressure progressively).

Each annealed :class:`~exporters.sparsity.fatrelu.FATReLU` records its last training-mode
input; :meth:`ThresholdAnneal.step` sets its threshold to the quantile of that input giving
the current target sparsity, smoothed by an exponential moving average (one batch is noisy).
The target ramps linearly from the layer's own sparsity when annealing starts to
``target_sparsity`` over ``steps`` steps, then stays there.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from exporters.sparsity.errors import SparsifyError
from exporters.sparsity.fatrelu import FATReLU
from exporters.sparsity.modules import LinearRamp

log = logging.getLogger(__name__)

_MAX_VALUES = 1 << 20  # values per layer used for the batch quantile (a strided subsample above)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The smallest value with a fraction ``q`` of ``values`` below it (``kthvalue``: ``torch.quantile``
    refuses more than 16M values)."""
    if values.numel() > _MAX_VALUES:
        values = values[:: -(-values.numel() // _MAX_VALUES)]
    below = int(round(q * values.numel()))  # values that must fall below the threshold
    return values.kthvalue(min(values.numel(), below + 1)).values


class ThresholdAnneal:
    """Anneal the thresholds of ``modules`` to ``target_sparsity`` over ``steps`` optimizer steps.

    Args:
        modules: name -> FATReLU to anneal (per-layer or per-channel thresholds).
        target_sparsity: fraction of each layer's outputs that should be zero, in [0, 1).
        steps: optimizer steps of the linear ramp (0: the target at once).
        momentum: weight of the previous threshold in the moving average (0: the batch's quantile).

    Raises:
        SparsifyError: on a target outside [0, 1), negative steps or momentum outside [0, 1).

    Example:
        >>> fat = FATReLU(0.0)
        >>> a = ThresholdAnneal({"act": fat}, target_sparsity=0.75, steps=0, momentum=0.0)
        >>> _ = fat.train()(torch.arange(8.0))   # training-mode forward: input recorded
        >>> a.step(); float(fat.threshold)
        6.0
    """

    def __init__(self, modules: dict[str, FATReLU], target_sparsity: float, steps: int,
                 momentum: float = 0.9) -> None:
        if not 0.0 <= target_sparsity < 1.0:
            raise SparsifyError(f"target_sparsity={target_sparsity} must be in [0, 1), e.g. 0.85")
        if steps < 0 or not 0.0 <= momentum < 1.0:
            raise SparsifyError(f"anneal steps={steps} must be >= 0 and momentum={momentum} in [0, 1)")
        bad = [n for n, m in modules.items() if not isinstance(m, FATReLU) or m.learnable]
        if bad:
            raise SparsifyError(f"threshold annealing needs fixed-threshold FATReLU modules; {bad} are not "
                                "(use activation='fatrelu' without fatrelu_learnable)")
        self.modules = dict(modules)
        self.target = float(target_sparsity)
        self.ramp = LinearRamp(steps)
        self.momentum = float(momentum)
        self.step_count = 0
        self._start: dict[str, float] = {}
        self._last: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_pre_hook(self._hook_for(n)) for n, m in self.modules.items()]

    def _hook_for(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if module.training and torch.is_grad_enabled():
                self._last[name] = args[0].detach()
        return hook

    def current_target(self, name: str) -> float:
        """The sparsity layer ``name`` is annealed to at the current step."""
        start = self._start.get(name, 0.0)
        return start + (max(self.target, start) - start) * self.ramp.value(self.step_count)

    @torch.no_grad()
    def step(self) -> None:
        """Advance the ramp one step and move every threshold towards its quantile (call after
        ``optimizer.step()``; layers without a training-mode forward since the last call keep theirs)."""
        self.step_count += 1
        for name, fat in self.modules.items():
            x = self._last.pop(name, None)
            if x is None:
                continue
            if name not in self._start:  # the layer's own sparsity: the ramp starts there, not at 0
                self._start[name] = float((x < fat.threshold.mean()).float().mean())
            if self.target <= self._start[name]:  # already at least that sparse: nothing to raise
                continue
            q = self.current_target(name)
            if fat.per_channel:
                cdim = fat.channel_dim % x.dim()
                per = x.movedim(cdim, 0).reshape(x.shape[cdim], -1)
                new = torch.stack([_quantile(row, q) for row in per])
            else:
                new = _quantile(x.reshape(-1), q)
            new = new.clamp(min=0.0).to(fat.threshold.dtype)
            fat.threshold.copy_(self.momentum * fat.threshold + (1.0 - self.momentum) * new)

    def thresholds(self) -> dict[str, float]:
        """Current thresholds (per-channel ones as their mean)."""
        return {n: round(float(m.threshold.mean()), 6) for n, m in self.modules.items()}

    def remove(self) -> None:
        """Remove the recording hooks (thresholds stay as they are)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._last = {}
