"""One call to make a model's activations sparser: ``sparsify(model, recipe)``.

Recipes (docs/sparsity_training.md):

* ``"peng-scratch"``: Peng et al. from scratch: zeroth bias, restricted LayerNorm
  (no beta, gamma >= 1) and J-SquaredReLU in every Transformer MLP block.
* ``"peng-finetune"``: Peng et al. fine-tuning: zeroth bias, restricted LayerNorm
  (beta frozen, |gamma| raised to >= 1 over ``ramp_steps``) and base -> J-SquaredReLU
  blending over ``ramp_steps``.
* ``"fatrelu"``: Kurtz et al.: FATReLU in every MLP and conv block plus an activation
  L1 regulariser; calibrate thresholds afterwards with ``choose_thresholds``.
* ``"relufy"``: ReLU-fication of SiLU/Hardswish/GELU/ReLU6 models (exporters/sparsity/relufy.py):
  every smooth activation blends to ReLU (JSquaredReLU in Transformer MLPs) over
  ``ramp_steps``, with distillation from the frozen original.

GELU/SiLU MLP activations are swapped for the recipe's ReLU-family activation (a
warning names them); conv blocks only ever match ReLU-family activations.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from exporters.sparsity.discovery import ConvBlock, MLPBlock, RELU_FAMILY, find_conv_blocks, find_mlp_blocks
from exporters.sparsity.anneal import ThresholdAnneal
from exporters.sparsity.errors import SparsifyError
from exporters.sparsity.fatrelu import ActivationL1, FATReLU
from exporters.sparsity.measure import activation_sparsity
from exporters.sparsity.modules import JSquaredReLU, MixedActivation, RestrictedLayerNorm, ZerothBias

log = logging.getLogger(__name__)

_ACTIVATIONS = ("keep", "relu", "jsrelu", "mixed", "fatrelu")
_RELUFY_ACTIVATIONS = ("relu", "jsrelu", "fatrelu")
_LAYERNORMS = ("keep", "scratch", "finetune")
_TARGETS = ("mlp", "conv")


@dataclass(frozen=True)
class Recipe:
    """Which modules ``sparsify`` installs, and their hyperparameters.

    Example:
        >>> r = Recipe(activation="fatrelu", l1_alpha=1e-4, fatrelu_per_channel=True)
        >>> r.targets
        ('mlp', 'conv')
    """

    targets: tuple[str, ...] = ("mlp", "conv")  # block kinds to modify: "mlp" and/or "conv"
    activation: str = "keep"  # new activation: keep | relu | jsrelu | mixed | fatrelu
    layernorm: str = "keep"  # LayerNorm in front of each MLP: keep | scratch | finetune
    zeroth_bias: bool = False  # add a ZerothBias table in front of each MLP's fc1
    tokens: int | None = None  # token positions for the zeroth bias (needed when it is on)
    token_dim: int = -2  # token axis of the MLP input: -2 for (B, T, C), 0 for (T, B, C)
    zeroth_bias_clip: float = 0.1  # |B| <= clip * |gamma| (Peng et al., references §1)
    ramp_steps: int = 3000  # fine-tune schedules: gamma floor and ReLU->JSReLU blend (T5: 3000)
    fatrelu_threshold: float = 0.0  # initial threshold; 0 = plain ReLU until calibrated
    fatrelu_per_channel: bool = False  # one threshold per channel instead of per layer
    fatrelu_learnable: bool = False  # train thresholds (straight-through sigmoid surrogate)
    l1_alpha: float = 0.0  # activation L1 weight on the modified activations; 0 = off
    include: tuple[str, ...] = ()  # only blocks whose activation name starts with one of these
    exclude: tuple[str, ...] = ()  # skip blocks whose activation name starts with one of these
    relufy: bool = False  # replace smooth activations (SiLU, Hardswish, GELU, ReLU6, ...) by blending
    mlp_activation: str = "jsrelu"  # relufy: new activation in Transformer MLPs (relu | jsrelu | fatrelu)
    distill_alpha: float = 0.0  # relufy: weight of the distillation loss from the frozen original
    distill_temperature: float = 2.0  # relufy: softmax temperature of the logit distillation (Hinton: 2-4)
    target_sparsity: float | None = None  # anneal FATReLU thresholds while training to this sparsity; None = off
    anneal_steps: int = 500  # steps of the annealing ramp (relufy: counted from the end of the blend)

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in _TARGETS]
        if bad or not self.targets:
            raise SparsifyError(f"Recipe.targets {self.targets!r} invalid; expected a non-empty subset of {_TARGETS}")
        if self.activation not in _ACTIVATIONS:
            raise SparsifyError(f"Recipe.activation {self.activation!r} unknown; expected one of {_ACTIVATIONS}")
        if self.layernorm not in _LAYERNORMS:
            raise SparsifyError(f"Recipe.layernorm {self.layernorm!r} unknown; expected one of {_LAYERNORMS}")
        if self.relufy and (self.activation not in _RELUFY_ACTIVATIONS
                            or self.mlp_activation not in _RELUFY_ACTIVATIONS):
            raise SparsifyError(f"relufy needs activation and mlp_activation in {_RELUFY_ACTIVATIONS}, got "
                                f"{self.activation!r} and {self.mlp_activation!r}")
        if self.distill_alpha < 0 or self.distill_temperature <= 0:
            raise SparsifyError(f"distill_alpha={self.distill_alpha} must be >= 0 and distill_temperature="
                                f"{self.distill_temperature} > 0")
        if self.target_sparsity is not None and not 0.0 <= self.target_sparsity < 1.0:
            raise SparsifyError(f"Recipe.target_sparsity={self.target_sparsity} must be in [0, 1) or None, e.g. 0.85")
        if self.anneal_steps < 0:
            raise SparsifyError(f"Recipe.anneal_steps={self.anneal_steps} must be >= 0")
        if self.tokens is not None and self.tokens <= 0:
            raise SparsifyError(f"Recipe.tokens must be a positive int or None, got {self.tokens!r}")
        if self.l1_alpha < 0 or self.fatrelu_threshold < 0 or self.ramp_steps < 0:
            raise SparsifyError(
                f"l1_alpha={self.l1_alpha}, fatrelu_threshold={self.fatrelu_threshold}, "
                f"ramp_steps={self.ramp_steps} must all be >= 0"
            )


RECIPES: dict[str, Recipe] = {
    "peng-scratch": Recipe(targets=("mlp",), activation="jsrelu", layernorm="scratch", zeroth_bias=True),
    "peng-finetune": Recipe(targets=("mlp",), activation="mixed", layernorm="finetune", zeroth_bias=True),
    # alpha: Kurtz et al. tune it per model; 1e-4 on a sum of per-layer means is a mild start.
    "fatrelu": Recipe(targets=("mlp", "conv"), activation="fatrelu", l1_alpha=1e-4),
    # ramp_steps: a stated default for small fine-tunes (a few epochs of a small data set);
    # Peng et al. blend over 3000 steps on T5. Override with sparsify(..., ramp_steps=N).
    "relufy": Recipe(activation="relu", mlp_activation="jsrelu", relufy=True, ramp_steps=500,
                     distill_alpha=1.0, distill_temperature=2.0),
}


@dataclass(frozen=True)
class Replacement:
    """One change ``sparsify`` made: ``name`` now holds ``module`` (was a ``before``)."""

    name: str
    kind: str  # "activation", "layernorm" or "zeroth_bias"
    before: str  # class name of what was there ("" for an inserted zeroth bias)
    module: nn.Module


class Sparsified:
    """A model after ``sparsify``: call :meth:`loss` (or :meth:`regularizer`) and :meth:`after_step`.

    Attributes:
        model: the same model object, modified in place.
        recipe: the :class:`Recipe` applied.
        blocks: the MLP/conv blocks that were modified.
        modules: every :class:`Replacement` made.
        activation_names: names of the activation modules whose outputs are the sparse ones.

    Example:
        >>> s = sparsify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "fatrelu")
        >>> [r.name for r in s.modules]
        ['1']
    """

    def __init__(self, model: nn.Module, recipe: Recipe, blocks: list[MLPBlock | ConvBlock],
                 modules: list[Replacement], zeroth: list[tuple[ZerothBias, str | None]]) -> None:
        self.model = model
        self.recipe = recipe
        self.blocks = blocks
        self.modules = modules
        self.activation_names = [b.activation for b in blocks]
        self._zeroth = zeroth
        acts = {n: model.get_submodule(n) for n in self.activation_names}
        self._l1 = ActivationL1(acts, recipe.l1_alpha) if recipe.l1_alpha > 0 else None
        self.anneal = annealer(acts, recipe) if acts else None

    @torch.no_grad()
    def after_step(self) -> None:
        """Advance schedules and enforce constraints; call after every ``optimizer.step()``."""
        for _name, mod in self.model.named_modules():
            if isinstance(mod, RestrictedLayerNorm):
                mod.after_step()
            elif isinstance(mod, MixedActivation):
                mod.step()
            elif isinstance(mod, FATReLU):
                mod.after_step()
        if self.anneal is not None and self._annealing():
            self.anneal.step()
        for zb, norm in self._zeroth:  # after the LayerNorms: the bound uses the new gamma
            zb.clip_(self.model.get_submodule(norm).weight if norm else None)

    def _annealing(self) -> bool:
        """Whether threshold annealing advances at this step (always, outside relufy's blend)."""
        return True

    def regularizer(self) -> torch.Tensor:
        """Return the activation L1 term recorded since the last call (0 when off)."""
        return self._l1.penalty() if self._l1 is not None else torch.zeros(())

    def loss(self, base_loss: torch.Tensor) -> torch.Tensor:
        """Return ``base_loss + regularizer()``."""
        return base_loss + self.regularizer().to(base_loss.device)

    def sparsity(self, data: torch.Tensor | Iterable) -> dict[str, float]:
        """Activation sparsity of the modified activations on ``data`` (see ``activation_sparsity``)."""
        return activation_sparsity(self.model, data, self.activation_names)

    def remove_hooks(self) -> None:
        """Detach the L1 regulariser's and the threshold annealing's hooks (e.g. before export)."""
        if self._l1 is not None:
            self._l1.remove()
            self._l1 = None
        if self.anneal is not None:
            self.anneal.remove()
            self.anneal = None


def annealer(activations: dict[str, nn.Module], recipe: Recipe) -> ThresholdAnneal | None:
    """The threshold annealing of ``recipe.target_sparsity`` over the FATReLU ``activations`` (None when off).

    Raises:
        SparsifyError: when a target is set but none of the activations is a FATReLU.
    """
    if recipe.target_sparsity is None:
        return None
    fats = {n: m for n, m in activations.items() if isinstance(m, FATReLU)}
    if not fats:
        raise SparsifyError(f"target_sparsity={recipe.target_sparsity} anneals FATReLU thresholds, but none of "
                            f"the {len(activations)} sparsified activations is a FATReLU; use activation='fatrelu' "
                            "(or the 'fatrelu'/'relufy' recipes) or leave target_sparsity=None")
    return ThresholdAnneal(fats, recipe.target_sparsity, recipe.anneal_steps)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def _selected(name: str, recipe: Recipe) -> bool:
    if recipe.include and not any(name.startswith(p) for p in recipe.include):
        return False
    return not any(name.startswith(p) for p in recipe.exclude)


def _new_activation(old: nn.Module, recipe: Recipe, channels: int, channel_dim: int) -> nn.Module | None:
    """The activation that replaces ``old`` under ``recipe``; None to keep ``old``."""
    kind = recipe.activation
    if kind == "keep":
        return None
    if kind == "relu":
        return None if isinstance(old, nn.ReLU) else nn.ReLU()
    if kind == "jsrelu":
        return JSquaredReLU()
    if kind == "mixed":
        return MixedActivation(old, recipe.ramp_steps)
    return FATReLU(
        threshold=recipe.fatrelu_threshold,
        num_channels=channels if recipe.fatrelu_per_channel else None,
        channel_dim=channel_dim,
        learnable=recipe.fatrelu_learnable,
        cap=6.0 if isinstance(old, nn.ReLU6) else None,  # FATReLU for ReLU6 keeps clamp max 6
    )


def _swap_activation(model: nn.Module, block: MLPBlock | ConvBlock, recipe: Recipe,
                     changes: list[Replacement]) -> None:
    old = model.get_submodule(block.activation)
    if isinstance(block, MLPBlock):
        channels, cdim = model.get_submodule(block.fc1).out_features, -1
    else:
        channels, cdim = model.get_submodule(block.conv).out_channels, 1
    new = _new_activation(old, recipe, channels, cdim)
    if new is None:
        return
    if not isinstance(old, RELU_FAMILY):
        log.warning("sparsify: %s is %s, not ReLU-family; replaced by %s (needs training to recover accuracy)",
                    block.activation, type(old).__name__, type(new).__name__)
    _set_submodule(model, block.activation, new)
    changes.append(Replacement(block.activation, "activation", type(old).__name__, new))


def _patch_mlp_input(model: nn.Module, block: MLPBlock, recipe: Recipe, changes: list[Replacement],
                     zeroth: list[tuple[ZerothBias, str | None]]) -> None:
    """Restrict the LayerNorm in front of the MLP and insert the zeroth bias after it."""
    if recipe.layernorm != "keep":
        if block.norm is None:
            log.warning("sparsify: MLP %s has no LayerNorm in front; layernorm=%r skipped there",
                        block.fc1, recipe.layernorm)
        else:
            old = model.get_submodule(block.norm)
            new = RestrictedLayerNorm.from_layernorm(old, recipe.layernorm, recipe.ramp_steps)
            _set_submodule(model, block.norm, new)
            changes.append(Replacement(block.norm, "layernorm", type(old).__name__, new))
    if recipe.zeroth_bias:
        fc1 = model.get_submodule(block.fc1)
        zb = ZerothBias(recipe.tokens, fc1.in_features, recipe.token_dim, recipe.zeroth_bias_clip)
        zb = zb.to(device=fc1.weight.device, dtype=fc1.weight.dtype)
        _set_submodule(model, block.fc1, nn.Sequential(zb, fc1))  # fc1 -> fc1.0 (bias), fc1.1
        changes.append(Replacement(f"{block.fc1}.0", "zeroth_bias", "", zb))
        norm = block.norm if block.norm is not None and model.get_submodule(block.norm).weight is not None else None
        zeroth.append((zb, norm))


def sparsify(model: nn.Module, recipe: str | Recipe = "fatrelu", **overrides: object) -> Sparsified:
    """Install the recipe's sparsity modules into ``model`` (in place) and return a handle.

    Create the optimizer *after* this call: new parameters (zeroth bias, learnable
    thresholds) and frozen ones (LayerNorm beta) change the trainable set.

    Args:
        model: an ``nn.Module`` (Sequential CNN, ResNet/MobileNet-style, ViT-style, ...).
        recipe: a name from :data:`RECIPES` or a :class:`Recipe`.
        **overrides: Recipe fields to replace, e.g. ``tokens=65`` or ``l1_alpha=1e-3``.

    Returns:
        A :class:`Sparsified` with ``.model``, ``.modules``, ``.after_step()``, ``.loss()``
        (a :class:`~exporters.sparsity.relufy.Relufied` for relufy recipes).

    Raises:
        SparsifyError: on an unknown recipe or field, or when no block matches.
    """
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise SparsifyError(f"unknown recipe {recipe!r}; available: {sorted(RECIPES)} or a Recipe(...)")
        recipe = RECIPES[recipe]
    if not isinstance(recipe, Recipe):
        raise SparsifyError(f"recipe must be a name or a Recipe, got {type(recipe).__name__}")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SparsifyError(f"unknown Recipe fields {unknown}; available: {sorted(fields)}")
    recipe = dataclasses.replace(recipe, **overrides)
    if recipe.relufy:
        from exporters.sparsity.relufy import relufy  # relufy.py imports this module

        return relufy(model, recipe)
    if recipe.zeroth_bias and recipe.tokens is None and "mlp" in recipe.targets:
        raise SparsifyError(
            "the zeroth bias needs the number of token positions, got tokens=None; pass e.g. "
            "sparsify(model, 'peng-scratch', tokens=197) (the longest sequence) or zeroth_bias=False"
        )
    found: list[MLPBlock | ConvBlock] = []
    if "mlp" in recipe.targets:
        found += find_mlp_blocks(model)
    if "conv" in recipe.targets:
        found += find_conv_blocks(model)
    blocks = [b for b in found if _selected(b.activation, recipe)]
    if not blocks:
        raise SparsifyError(
            f"sparsify found no {'/'.join(recipe.targets)} block in {type(model).__name__} "
            f"(include={recipe.include}, exclude={recipe.exclude}); expected Linear -> activation -> Linear "
            "or Conv -> (BatchNorm) -> ReLU registered in execution order; see exporters/sparsity/discovery.py"
        )
    changes: list[Replacement] = []
    zeroth: list[tuple[ZerothBias, str | None]] = []
    for block in blocks:
        _swap_activation(model, block, recipe, changes)
        if isinstance(block, MLPBlock):
            _patch_mlp_input(model, block, recipe, changes, zeroth)
    log.info("sparsify: recipe applied to %d blocks, %d modules replaced", len(blocks), len(changes))
    return Sparsified(model, recipe, blocks, changes, zeroth)
