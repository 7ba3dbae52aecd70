"""Which ReLU-family activations feed a Linear/Conv, traced through one forward pass.

:func:`find_fed_activations` tags each activation module's output and follows the tags
through the torch functions that keep zeros (max-pool, reshape, transpose, indexing, a gate's
multiplication, ...) to the ``nn.Linear`` / ``nn.Conv*`` inputs they reach. The threshold
fitter (:mod:`exporters.thresholds`) and the benchmarks use it to pick the activations worth
thresholding.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    >>> find_fed_activations(net, torch.randn(1, 4))
    {'1': ['3']}
"""
from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from exporters.sparsity import FATReLU, JSquaredReLU, MixedActivation

_RELU_FAMILY = (nn.ReLU, nn.ReLU6, FATReLU, JSquaredReLU, MixedActivation)
_CONSUMERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: torch functions through which an activation's zeros reach a consumer's input.
_PASS_THROUGH = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "adaptive_max_pool2d",
                 "flatten", "reshape", "view", "permute", "transpose", "contiguous", "dropout", "squeeze",
                 "unsqueeze", "__getitem__", "clone", "flatten_", "t", "split", "chunk", "unbind", "cat", "concat",
                 "mul", "__mul__", "__rmul__"}
_ANY_ARG = {"mul", "__mul__", "__rmul__"}  # a zero in either factor is a zero of the product


class _FlowTap(TorchFunctionMode):
    """Propagates 'derived from activation X' tags through pass-through torch functions."""

    def __init__(self, tags: dict[int, set[str]], keep: list) -> None:
        super().__init__()
        self.tags, self.keep = tags, keep

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in _PASS_THROUGH and args:
            inputs = args if name in _ANY_ARG else args[0] if isinstance(args[0], (tuple, list)) else args[:1]
            src = set().union(*(self.tags.get(id(a), set()) for a in inputs if isinstance(a, torch.Tensor)))
            if src:
                for o in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(o, torch.Tensor):
                        self.tags.setdefault(id(o), set()).update(src)
                        self.keep.append(o)
        return out


def find_fed_activations(model: nn.Module, example: torch.Tensor) -> dict[str, list[str]]:
    """Return ``{activation module name: [Linear/Conv names its output feeds]}`` in execution order.

    Runs ``example`` once (eval, no grad). An activation counts when its output reaches a
    consumer's input directly or through pass-through ops (max-pool, reshape, flatten,
    transpose, dropout, indexing, split, concatenation, multiplication by a gate), where the
    zeros survive. Only activation *modules* (``nn.ReLU``, ``nn.ReLU6``, ``FATReLU``,
    ``JSquaredReLU``, ``MixedActivation``) are found; functional ``F.relu`` calls cannot
    be replaced and are skipped.
    """
    acts = {n: m for n, m in model.named_modules() if isinstance(m, _RELU_FAMILY)}
    consumers = {n: m for n, m in model.named_modules() if isinstance(m, _CONSUMERS)}
    tags: dict[int, set[str]] = {}
    keep: list = []
    fed: dict[str, list[str]] = {}
    order: list[str] = []

    def act_hook(name: str):
        def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            order.append(name)
            tags.setdefault(id(out), set()).add(name)
            keep.append(out)
        return hook

    def consumer_hook(name: str):
        def hook(_m: nn.Module, args: tuple) -> None:
            for src in tags.get(id(args[0]), ()):
                if name not in fed.setdefault(src, []):
                    fed[src].append(name)
        return hook

    handles = [m.register_forward_hook(act_hook(n)) for n, m in acts.items()]
    handles += [m.register_forward_pre_hook(consumer_hook(n)) for n, m in consumers.items()]
    try:
        with torch.no_grad(), _FlowTap(tags, keep):
            model(example)
    finally:
        for h in handles:
            h.remove()
    return {n: fed[n] for n in dict.fromkeys(order) if n in fed}  # execution order
