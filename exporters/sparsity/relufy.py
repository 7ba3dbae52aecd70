"""ReLU-fication: make SiLU / Hardswish / GELU / ReLU6 models sparse by fine-tuning.

``sparsify(model, "relufy")`` replaces every smooth activation module (``nn.SiLU``,
``nn.Hardswish``, ``nn.GELU``, ``nn.ReLU6``, ``nn.Mish`` and parameter-free self-gated
modules computing ``x * gate(x)`` with a ``Hardsigmoid``/``Sigmoid`` child, i.e. hand-written
h-swish / swish) with a :class:`ActivationBlend` from the original activation to a
ReLU-family one: ``nn.ReLU`` (or ``FATReLU`` with ``activation="fatrelu"``) in conv nets and
heads, ``JSquaredReLU`` in Transformer MLPs (a ``Linear -> act -> Linear`` block with a
LayerNorm in front; ``mlp_activation`` picks it). The blend weight ``k`` ramps 0 -> 1 over
``ramp_steps`` optimizer steps; once it reaches 1, :meth:`Relufied.after_step` swaps the
blend for the plain new module, so the exported graph holds only Relu (or Where, or
Relu-Mul-Add) and the runtime's zero detection sees it. A frozen copy of the original model
is the teacher: :meth:`Relufied.loss` adds ``distill_alpha`` times a distillation loss
between the student's outputs and the teacher's on the same inputs (labels optional).

Sources (docs/references.md §1): ProSparse / TurboSparse / Mirzadeh et al. 2023 ("ReLU
strikes back") swap SiLU/GELU for ReLU-family activations and fine-tune briefly; Peng et
al.'s ``(1-k)*ReLU + k*JSReLU`` blend schedule; Hinton et al.'s distillation
(KL divergence of temperature-softened outputs, scaled by T**2).

With ``target_sparsity`` set, the new conv/head activations are :class:`ShiftedReLU` modules
(``activation="relu"``: ``max(x - t, 0)``, exported as a lower Conv bias + Relu) or FATReLUs
(``activation="fatrelu"``), threshold 0 at first (i.e. ReLU), whose thresholds are annealed to that sparsity over ``anneal_steps`` steps once the blend
has ended (:mod:`exporters.sparsity.anneal`), while distillation keeps the outputs close to
the original's.

Squeeze-excitation gates (``Hardsigmoid``/``Sigmoid`` after a 1x1 conv) are left alone: they
scale a tensor whose zeros survive the multiplication (the runtime treats Mul as a
pass-through).
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from exporters.sparsity.discovery import find_mlp_blocks
from exporters.sparsity.errors import SparsifyError
from exporters.sparsity.fatrelu import ActivationL1, FATReLU, ShiftedReLU
from exporters.sparsity.modules import JSquaredReLU, LinearRamp, _StepCounter
from exporters.sparsity.sparsify import Recipe, Replacement, Sparsified, annealer

log = logging.getLogger(__name__)

#: Smooth activations relufy replaces (ReLU6 too: its zeros stay, its cap goes).
SMOOTH: tuple[type[nn.Module], ...] = (nn.SiLU, nn.Hardswish, nn.GELU, nn.ReLU6, nn.Mish)
_GATES = (nn.Hardsigmoid, nn.Sigmoid)


class ActivationBlend(_StepCounter):
    """``(1-k) * original(z) + k * new(z)``, ``k`` ramping linearly 0 -> 1 over ``ramp_steps``.

    Call :meth:`step` after every optimizer step. At ``k = 1`` only ``new`` runs (a Python
    branch: an export then holds no blend); :meth:`Relufied.after_step` swaps the blend for
    ``new`` at that point.

    Args:
        original: the activation being replaced (copied; in-place modules become out-of-place).
        new: the ReLU-family activation it becomes.
        ramp_steps: optimizer steps for ``k`` to go from 0 to 1 (0: ``new`` at once).

    Example:
        >>> b = ActivationBlend(nn.SiLU(), nn.ReLU(), ramp_steps=2)
        >>> b.step(); b.k
        0.5
    """

    def __init__(self, original: nn.Module, new: nn.Module, ramp_steps: int) -> None:
        super().__init__()
        original = copy.deepcopy(original)
        if getattr(original, "inplace", False):
            original.inplace = False  # original(z) must not overwrite z: new(z) reads it too
        self.original = original
        self.new = new
        self.ramp = LinearRamp(ramp_steps)

    @property
    def k(self) -> float:
        """Current weight of the new activation."""
        return self.ramp.value(self.step_count)

    @property
    def done(self) -> bool:
        """True once ``k`` has reached 1."""
        return self.k >= 1.0

    def step(self) -> None:
        """Advance the schedule by one optimizer step."""
        self.step_count += 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k = self.k
        if k >= 1.0:
            return self.new(z)
        if k <= 0.0:
            return self.original(z)
        return (1.0 - k) * self.original(z) + k * self.new(z)

    def extra_repr(self) -> str:
        return f"k={self.k:.4g}, ramp_steps={self.ramp.steps}"


def is_self_gated(module: nn.Module) -> bool:
    """True for a parameter-free module with one Hardsigmoid/Sigmoid child computing ``x * gate(x)``.

    Checked numerically on a probe tensor (hand-written ``h_swish``/``Swish`` classes).
    """
    children = list(module.children())
    if len(children) != 1 or not isinstance(children[0], _GATES) or any(True for _ in module.parameters()):
        return False
    z = torch.linspace(-6.0, 6.0, 96).reshape(2, 3, 4, 4)  # (N, C, H, W)
    try:
        with torch.no_grad():
            return bool(torch.allclose(module(z.clone()), z * children[0](z.clone()), atol=1e-6))
    except Exception:  # noqa: BLE001 - a module that cannot run on the probe is not an activation
        return False


def distillation_loss(student: Any, teacher: Any, temperature: float = 2.0) -> torch.Tensor:
    """Distillation loss of ``student`` outputs towards ``teacher`` outputs.

    2-D outputs (N, classes) are logits: ``KL(softmax(t/T) || softmax(s/T)) * T**2``
    (Hinton et al.); other tensors (feature maps, boxes) use the mean squared error; tuples
    and lists are summed element by element.

    Raises:
        SparsifyError: when the two outputs do not have the same structure or shapes.

    Example:
        >>> t = torch.tensor([[2.0, 0.0]])
        >>> float(distillation_loss(t, t))
        0.0
    """
    if isinstance(student, (tuple, list)):
        if not isinstance(teacher, (tuple, list)) or len(teacher) != len(student):
            raise SparsifyError(f"student output has {len(student)} parts, the teacher's {type(teacher).__name__} "
                                "does not match; the relufied model must keep the original's outputs")
        return sum((distillation_loss(s, t, temperature) for s, t in zip(student, teacher)), torch.zeros(()))
    if not isinstance(student, torch.Tensor) or not isinstance(teacher, torch.Tensor) or \
            student.shape != teacher.shape:
        raise SparsifyError(f"cannot distil output {getattr(student, 'shape', type(student))} from teacher output "
                            f"{getattr(teacher, 'shape', type(teacher))}; expected tensors of the same shape")
    teacher = teacher.detach()
    if student.dim() == 2:
        log_p = torch.log_softmax(student / temperature, dim=-1)
        q = torch.softmax(teacher / temperature, dim=-1)
        return nn.functional.kl_div(log_p, q, reduction="batchmean") * temperature ** 2
    return nn.functional.mse_loss(student, teacher)


def _new_activation(old: nn.Module, kind: str, annealed: bool = False) -> nn.Module:
    if kind == "relu":
        return ShiftedReLU(0.0) if annealed else nn.ReLU()  # ReLU until its threshold (a bias shift) rises
    if kind == "jsrelu":
        return JSquaredReLU()
    return FATReLU(0.0)  # threshold calibrated after fine-tuning (choose_thresholds / fit_thresholds)


def find_smooth(model: nn.Module, recipe: Recipe) -> list[tuple[str, nn.Module]]:
    """Every place (name, module) holding a smooth or self-gated activation, shared ones at each name."""
    found: list[tuple[str, nn.Module]] = []
    skip: list[str] = []
    places: set[tuple[int, str]] = set()
    for name, mod in model.named_modules(remove_duplicate=False):
        if not name or any(name.startswith(p + ".") for p in skip):
            continue
        if isinstance(mod, SMOOTH) or is_self_gated(mod):
            skip.append(name)
            parent, _, attr = name.rpartition(".")
            key = (id(model.get_submodule(parent) if parent else model), attr)
            if key in places:  # a shared parent: one setattr covers every path to it
                continue
            places.add(key)
            if (not recipe.include or any(name.startswith(p) for p in recipe.include)) and \
                    not any(name.startswith(p) for p in recipe.exclude):
                found.append((name, mod))
    return found


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


class Relufied(Sparsified):
    """A model after ``sparsify(model, "relufy")``: blends, a frozen teacher, a distillation loss.

    Attributes (beyond :class:`Sparsified`'s):
        teacher: the frozen original model (eval mode, no gradients).
        blends: activation name -> its :class:`ActivationBlend` until the blend ends.

    Example:
        >>> from exporters.sparsity import sparsify
        >>> s = sparsify(nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2)), "relufy", ramp_steps=1)
        >>> out = s.model(torch.randn(3, 4)); s.loss().backward(); s.after_step()
        >>> type(s.model[1]).__name__
        'ReLU'
    """

    def __init__(self, model: nn.Module, recipe: Recipe, teacher: nn.Module,
                 blends: dict[str, ActivationBlend], changes: list[Replacement]) -> None:
        super().__init__(model, recipe, [], changes, [])
        self.teacher = teacher
        self.blends = dict(blends)
        self.activation_names = list(blends)
        self._l1 = ActivationL1({n: model.get_submodule(n) for n in blends}, recipe.l1_alpha) \
            if recipe.l1_alpha > 0 else None
        self._recorded: list[tuple[tuple, Any]] = []
        self._hook = model.register_forward_hook(self._record)
        self.anneal = annealer({n: b.new for n, b in blends.items()}, recipe)  # starts when the blends end

    def _annealing(self) -> bool:
        return not self.blends

    def _record(self, module: nn.Module, args: tuple, out: Any) -> None:
        if module.training and torch.is_grad_enabled() and self.recipe.distill_alpha > 0:
            self._recorded.append((args, out))

    @torch.no_grad()
    def after_step(self) -> None:
        """Advance every blend (and the base schedules); blends that reached k = 1 become plain modules."""
        super().after_step()
        finished = []
        for name, blend in self.blends.items():
            blend.step()
            if blend.done:
                finished.append(name)
        self._swap(finished)

    def finalize(self) -> nn.Module:
        """End every blend now (k = 1) and return the model: only plain ReLU-family modules remain.

        Also removes the recording hook and the L1 hooks (call it before export).
        """
        if any(not b.done for b in self.blends.values()):
            log.warning("relufy: finalize() before the blend ended (k=%s); the model now runs the new "
                        "activations only", sorted({round(b.k, 3) for b in self.blends.values()}))
        self._swap(list(self.blends))
        self._hook.remove()
        self._recorded = []
        self.remove_hooks()
        return self.model

    def _swap(self, names: list[str]) -> None:
        for name in names:
            _set(self.model, name, self.blends.pop(name).new)
        if names and self._l1 is not None:  # the hooks sat on the blends: move them to the new modules
            self._l1.remove()
            self._l1 = ActivationL1({n: self.model.get_submodule(n) for n in self.activation_names},
                                    self.recipe.l1_alpha)

    def distill(self) -> torch.Tensor:
        """Distillation loss over the training-mode forwards since the last call (then forgotten).

        Raises:
            SparsifyError: when no training-mode forward ran since the last call.
        """
        recorded, self._recorded = self._recorded, []
        if not recorded:
            raise SparsifyError("relufy: no training-mode forward of s.model since the last loss(); call "
                                "s.model(x) in train mode (grad enabled) before s.loss(...)")
        total = torch.zeros(())
        for args, out in recorded:
            with torch.no_grad():
                target = self.teacher(*args)
            total = total + distillation_loss(out, target, self.recipe.distill_temperature)
        return total / len(recorded)

    def loss(self, base_loss: torch.Tensor | None = None) -> torch.Tensor:
        """``base_loss`` (labels; optional) ``+ distill_alpha * distill() + regularizer()``.

        Raises:
            SparsifyError: with neither a base loss nor distillation (``distill_alpha=0``).
        """
        if base_loss is None and self.recipe.distill_alpha <= 0:
            raise SparsifyError("relufy: loss() got no base loss and distill_alpha=0; pass a task loss "
                                "or keep distillation on (distill_alpha > 0)")
        total = base_loss if base_loss is not None else torch.zeros(())
        if self.recipe.distill_alpha > 0:
            total = total + self.recipe.distill_alpha * self.distill()
        return total + self.regularizer().to(total.device)


def relufy(model: nn.Module, recipe: Recipe) -> Relufied:
    """Apply a relufy ``recipe`` to ``model`` in place (see the module docstring).

    Raises:
        SparsifyError: when the model has no smooth activation module to replace.
    """
    places = find_smooth(model, recipe)
    if not places:
        raise SparsifyError(
            f"relufy found no {'/'.join(t.__name__ for t in SMOOTH)} or self-gated activation module in "
            f"{type(model).__name__} (include={recipe.include}, exclude={recipe.exclude}); functional calls "
            "(F.silu) cannot be replaced: make them modules, or use the 'fatrelu' recipe on ReLU models")
    mlp = {b.activation for b in find_mlp_blocks(model) if b.norm is not None}  # Transformer MLPs
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    blends: dict[str, ActivationBlend] = {}
    changes: list[Replacement] = []
    for name, old in places:
        kind = recipe.mlp_activation if name in mlp else recipe.activation
        ref = next(iter(model.parameters()), None)
        blend = ActivationBlend(old, _new_activation(old, kind, recipe.target_sparsity is not None),
                                recipe.ramp_steps)
        if ref is not None:
            blend = blend.to(device=ref.device, dtype=ref.dtype)
        _set(model, name, blend)
        blends[name] = blend
        changes.append(Replacement(name, "activation", type(old).__name__, blend))
    log.info("relufy: %d activations blended to ReLU-family over %d steps", len(blends), recipe.ramp_steps)
    s = Relufied(model, recipe, teacher, blends, changes)
    if recipe.ramp_steps == 0:
        s._swap(list(blends))
    return s
