"""Measure activation sparsity: the fraction of exact zeros in chosen modules' outputs."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from exporters.sparsity.errors import SparsifyError
from exporters.sparsity.fatrelu import run_hooked


def activation_sparsity(model: nn.Module, data: torch.Tensor | Iterable,
                        names: Iterable[str]) -> dict[str, float]:
    """Run ``data`` through ``model`` (eval, no grad) and return each module's sparsity.

    Sparsity is the fraction of exact zeros over every output entry (all tokens/pixels
    times hidden units), as in Peng et al.; a module called several times per forward
    (a shared ReLU) counts all its calls.

    Args:
        model: the model.
        data: a Tensor (one batch) or an iterable of batches (Tensor or tuple of inputs).
        names: module names as in ``model.named_modules()``.

    Returns:
        ``{name: sparsity}``; ``"mean"`` maps to the unweighted mean over the modules.

    Raises:
        SparsifyError: on an unknown module name or when no module ran.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        >>> 0.0 <= activation_sparsity(m, torch.randn(16, 4), ["1"])["1"] <= 1.0
        True
    """
    modules = dict(model.named_modules())
    names = list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise SparsifyError(f"unknown module names {unknown}; pass names from model.named_modules()")
    zeros = {n: 0 for n in names}
    total = {n: 0 for n in names}

    def hook_for(name: str):
        def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            zeros[name] += int((out == 0).sum())
            total[name] += out.numel()
        return hook

    run_hooked(model, data, [modules[n].register_forward_hook(hook_for(n)) for n in names])
    if not names or any(total[n] == 0 for n in names):
        raise SparsifyError(f"no output recorded for some of {names}; check the data reaches them")
    result = {n: zeros[n] / total[n] for n in names}
    result["mean"] = sum(result.values()) / len(names)
    return result
