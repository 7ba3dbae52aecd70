"""Training-side modules that make ReLU activations sparser, and ``sparsify`` to install them.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from exporters.sparsity import sparsify
    >>> s = sparsify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "fatrelu", l1_alpha=1e-3)
    >>> loss = s.loss(s.model(torch.randn(3, 4)).pow(2).mean()); loss.backward(); s.after_step()
"""
from __future__ import annotations

from exporters.sparsity.anneal import ThresholdAnneal
from exporters.sparsity.discovery import ConvBlock, MLPBlock, find_conv_blocks, find_mlp_blocks
from exporters.sparsity.errors import SparsifyError
from exporters.sparsity.fatrelu import ActivationL1, FATReLU, ShiftedReLU, choose_thresholds
from exporters.sparsity.measure import activation_sparsity
from exporters.sparsity.modules import (
    JSquaredReLU,
    LinearRamp,
    MixedActivation,
    RestrictedLayerNorm,
    ZerothBias,
    j_squared_relu,
)
from exporters.sparsity.sparsify import RECIPES, Recipe, Replacement, Sparsified, sparsify
from exporters.sparsity.relufy import ActivationBlend, Relufied, distillation_loss, is_self_gated  # noqa: I001

__all__ = [
    "RECIPES", "ActivationBlend", "ActivationL1", "Relufied", "distillation_loss", "is_self_gated", "ConvBlock", "FATReLU", "JSquaredReLU", "LinearRamp", "MLPBlock",
    "MixedActivation", "Recipe", "Replacement", "RestrictedLayerNorm", "ShiftedReLU", "Sparsified", "SparsifyError",
    "ThresholdAnneal",
    "ZerothBias", "activation_sparsity", "choose_thresholds", "find_conv_blocks", "find_mlp_blocks",
    "j_squared_relu", "sparsify",
]
