"""Find the blocks whose activations can be made sparser.

* MLP block: ``Linear -> activation -> Linear`` (Dropout/Identity may sit between), with
  the LayerNorm immediately in front of the first Linear where there is one.
* Conv block: ``Conv -> (BatchNorm) -> ReLU-family activation``.

Discovery walks the model's leaf modules in registration order (the order of
``named_modules``), which is the execution order for ``nn.Sequential`` and for the usual
``__init__`` style (``norm2`` before ``mlp``; ``fc1, act, fc2``). A model that registers
modules out of execution order, or calls activations functionally (``F.relu``), has
blocks this misses; use the recipe's ``include``/``exclude`` to narrow what is touched.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from exporters.sparsity.fatrelu import FATReLU
from exporters.sparsity.modules import JSquaredReLU, MixedActivation

#: Activations with an exact-zero region: neuron skipping works on their outputs.
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, FATReLU, JSquaredReLU, MixedActivation)
#: Activations accepted in an MLP block; smooth ones are swapped by the recipes.
MLP_ACTIVATIONS: tuple[type[nn.Module], ...] = RELU_FAMILY + (nn.GELU, nn.SiLU)
_PASS_THROUGH = (nn.Dropout, nn.Identity)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ATOMIC = MLP_ACTIVATIONS + (nn.Linear, nn.LayerNorm) + _CONVS + _BATCHNORMS + _PASS_THROUGH


@dataclass(frozen=True)
class MLPBlock:
    """Names (as in ``named_modules``) of one MLP block's parts.

    Example:
        >>> m = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
        >>> find_mlp_blocks(m)
        [MLPBlock(fc1='1', activation='2', fc2='3', norm='0')]
    """

    fc1: str
    activation: str
    fc2: str
    norm: str | None  # the LayerNorm feeding fc1, None when there is none


@dataclass(frozen=True)
class ConvBlock:
    """Names of one ``Conv -> (BatchNorm) -> activation`` block.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        >>> find_conv_blocks(m)
        [ConvBlock(conv='0', norm='1', activation='2')]
    """

    conv: str
    norm: str | None  # the BatchNorm between conv and activation, None when absent
    activation: str


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order; our activation wrappers count as leaves.

    A module registered under several names (a shared ``relu``) appears once.
    """
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, _ATOMIC) or not any(True for _ in child.children()):
                out.append((full, child))
            else:
                walk(full, child)

    walk("", model)
    return out


def find_mlp_blocks(model: nn.Module) -> list[MLPBlock]:
    """Return every ``Linear -> activation -> Linear`` block, in registration order.

    Args:
        model: any ``nn.Module``.

    Returns:
        One :class:`MLPBlock` per match; ``norm`` is set when the leaf just before
        ``fc1`` is an ``nn.LayerNorm``.
    """
    leaves = leaf_modules(model)
    blocks: list[MLPBlock] = []
    for i, (name, mod) in enumerate(leaves):
        if not isinstance(mod, nn.Linear) or i + 2 >= len(leaves):
            continue
        act_name, act = leaves[i + 1]
        if not isinstance(act, MLP_ACTIVATIONS):
            continue
        j = i + 2
        while j < len(leaves) and isinstance(leaves[j][1], _PASS_THROUGH):
            j += 1
        if j >= len(leaves) or not isinstance(leaves[j][1], nn.Linear):
            continue
        norm = leaves[i - 1][0] if i > 0 and isinstance(leaves[i - 1][1], nn.LayerNorm) else None
        blocks.append(MLPBlock(fc1=name, activation=act_name, fc2=leaves[j][0], norm=norm))
    return blocks


def find_conv_blocks(model: nn.Module) -> list[ConvBlock]:
    """Return every ``Conv -> (BatchNorm) -> ReLU-family`` block, in registration order.

    Args:
        model: any ``nn.Module``.

    Returns:
        One :class:`ConvBlock` per match.
    """
    leaves = leaf_modules(model)
    blocks: list[ConvBlock] = []
    for i, (name, mod) in enumerate(leaves):
        if not isinstance(mod, _CONVS):
            continue
        j, norm = i + 1, None
        if j < len(leaves) and isinstance(leaves[j][1], _BATCHNORMS):
            norm, j = leaves[j][0], j + 1
        if j < len(leaves) and isinstance(leaves[j][1], RELU_FAMILY):
            blocks.append(ConvBlock(conv=name, norm=norm, activation=leaves[j][0]))
    return blocks
