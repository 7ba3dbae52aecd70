"""Plug-and-play training modules that make ReLU activations sparser.

Definitions follow Peng et al. (arXiv 2309.03004, code github.com/cdgyp/sparsity) as
summarised in docs/references.md §1:

* :class:`ZerothBias`: learnable per-token-position bias added to the MLP input tokens.
* :class:`RestrictedLayerNorm`: LayerNorm whose |gamma| is kept (or raised) to >= 1.
* :class:`JSquaredReLU`: ``z**2/2 + z`` for ``z >= 0`` else 0 (same zero set as ReLU).
* :class:`MixedActivation`: ``(1-k)*base + k*JSquaredReLU`` with ``k`` ramping 0 -> 1.

All of them export through ``torch.onnx.export(dynamo=True)`` to standard ONNX ops.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from exporters.sparsity.errors import SparsifyError


@dataclass(frozen=True)
class LinearRamp:
    """A value that grows linearly from 0 at step 0 to 1 at ``steps``, then stays at 1.

    Args:
        steps: length of the ramp in optimizer steps; 0 means "already at 1".

    Example:
        >>> LinearRamp(4).value(1)
        0.25
    """

    steps: int

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise SparsifyError(
                f"ramp steps must be a non-negative int, got {self.steps!r}; "
                "pass e.g. ramp_steps=3000 (the paper's T5 fine-tuning schedule)"
            )

    def value(self, step: int) -> float:
        """Return the ramp value in [0, 1] after ``step`` optimizer steps."""
        if self.steps == 0:
            return 1.0
        return min(1.0, max(0, step) / self.steps)


class _StepCounter(nn.Module):
    """Base for modules with a schedule: keeps the step count in the state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.step_count = 0

    def get_extra_state(self) -> Any:
        return {"step_count": self.step_count}

    def set_extra_state(self, state: Any) -> None:
        self.step_count = int(state["step_count"])


def j_squared_relu(z: torch.Tensor) -> torch.Tensor:
    """J-SquaredReLU: ``z**2/2 + z`` for ``z >= 0``, else 0.

    Written as ``r * (0.5*r + 1)`` with ``r = relu(z)`` so that it exports as
    Relu, Mul, Add (no Where) and its zero set is exactly ReLU's.
    """
    r = torch.relu(z)
    return r * (0.5 * r + 1.0)


class JSquaredReLU(nn.Module):
    """J-SquaredReLU activation (Peng et al. 2023): ``z**2/2 + z`` if ``z >= 0`` else 0.

    Its derivative is ``z + 1`` for ``z > 0`` and 0 below, jumping from 0 to 1 at zero.

    Example:
        >>> JSquaredReLU()(torch.tensor([-1.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 4.0]
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return j_squared_relu(z)


class MixedActivation(_StepCounter):
    """Blend ``(1-k) * base(z) + k * JSquaredReLU(z)``, ``k`` ramping 0 -> 1 over steps.

    Used to fine-tune a trained model towards J-SquaredReLU. With a ReLU ``base`` every
    blend has ReLU's zero set. With a GELU ``base`` the zero set is ReLU's only once
    ``k`` reaches 1 (a GELU -> JSReLU swap). Call :meth:`step` after every optimizer step.

    Args:
        base: the activation being replaced (copied; an in-place ReLU becomes out-of-place).
        ramp_steps: optimizer steps for ``k`` to go from 0 to 1 (paper: 3000 on T5).

    Example:
        >>> act = MixedActivation(nn.ReLU(), ramp_steps=2)
        >>> act.step(); act.k
        0.5
    """

    def __init__(self, base: nn.Module, ramp_steps: int) -> None:
        super().__init__()
        base = copy.deepcopy(base)
        if getattr(base, "inplace", False):
            base.inplace = False  # base(z) must not overwrite z: JSReLU reads it too
        self.base = base
        self.ramp = LinearRamp(ramp_steps)

    @property
    def k(self) -> float:
        """Current weight of J-SquaredReLU in the blend."""
        return self.ramp.value(self.step_count)

    def step(self) -> None:
        """Advance the schedule by one optimizer step."""
        self.step_count += 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k = self.k  # a Python float: export sees one branch, no blend when k is 0 or 1
        if k <= 0.0:
            return self.base(z)
        if k >= 1.0:
            return j_squared_relu(z)
        return (1.0 - k) * self.base(z) + k * j_squared_relu(z)

    def extra_repr(self) -> str:
        return f"k={self.k:.4g}, ramp_steps={self.ramp.steps}"


class ZerothBias(nn.Module):
    """Learnable per-token-position bias table added to the MLP input tokens.

    ``B`` has shape ``(tokens, d_model)``, starts at 0 and is clipped after every
    optimizer step to ``|B[t, j]| <= clip * |gamma_j|`` of the LayerNorm in front of the
    MLP (:meth:`clip_`). At inference it is a constant per-position Add.

    Args:
        tokens: number of token positions (sequence length, incl. class token).
        d_model: feature width of the MLP input.
        token_dim: dimension of the input that indexes tokens: -2 for ``(B, T, C)``,
            0 for sequence-first ``(T, B, C)``.
        clip: bound factor on ``|gamma|`` (paper: 0.1).

    Raises:
        SparsifyError: if sizes are not positive or the input has more tokens than ``B``.

    Example:
        >>> zb = ZerothBias(tokens=5, d_model=8)
        >>> zb(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, tokens: int, d_model: int, token_dim: int = -2, clip: float = 0.1) -> None:
        super().__init__()
        if tokens <= 0 or d_model <= 0:
            raise SparsifyError(
                f"ZerothBias needs positive sizes, got tokens={tokens}, d_model={d_model}; "
                "pass the model's sequence length and MLP input width"
            )
        if clip < 0:
            raise SparsifyError(f"ZerothBias clip must be >= 0, got {clip}; the paper uses 0.1")
        self.table = nn.Parameter(torch.zeros(tokens, d_model))  # (T, C)
        self.token_dim = token_dim
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tdim = self.token_dim % x.dim()
        t = x.shape[tdim]
        if t > self.table.shape[0] or x.shape[-1] != self.table.shape[1]:
            raise SparsifyError(
                f"ZerothBias table is {tuple(self.table.shape)} (tokens, d_model) but the input "
                f"has {t} tokens on dim {self.token_dim} and width {x.shape[-1]}; set "
                "Recipe.tokens to the longest sequence and token_dim to the token axis"
            )
        table = self.table[:t]  # (T, C)
        shape = [1] * x.dim()
        shape[tdim], shape[-1] = t, x.shape[-1]
        return x + table.reshape(shape)

    @torch.no_grad()
    def clip_(self, gamma: torch.Tensor | None) -> None:
        """Clip ``B`` in place to ``|B[t, j]| <= clip * |gamma_j|`` (1 when no gamma)."""
        if gamma is None:
            bound = torch.full_like(self.table[0], self.clip)
        else:
            bound = self.clip * gamma.detach().abs().to(self.table.dtype)  # (C,)
        self.table.copy_(torch.maximum(torch.minimum(self.table, bound), -bound))

    def extra_repr(self) -> str:
        return f"tokens={self.table.shape[0]}, d_model={self.table.shape[1]}, clip={self.clip}"


class RestrictedLayerNorm(nn.LayerNorm):
    """LayerNorm whose ``|gamma|`` is kept at (scratch) or raised to (finetune) >= 1.

    * ``mode="scratch"``: beta is 0 and frozen; gamma is clamped to >= 1 after every step.
    * ``mode="finetune"``: beta is frozen at its trained value; the floor on ``|gamma|``
      ramps linearly 0 -> 1 over ``ramp_steps`` steps, keeping each entry's sign.

    The forward pass is an ordinary LayerNorm, so it exports as LayerNormalization.
    Call :meth:`after_step` after every optimizer step.

    Args:
        normalized_shape: as for :class:`torch.nn.LayerNorm` (must be elementwise affine).
        mode: ``"scratch"`` or ``"finetune"``.
        ramp_steps: fine-tuning schedule length (paper: 3000 steps on T5).
        eps: as for :class:`torch.nn.LayerNorm`.

    Raises:
        SparsifyError: on an unknown mode.

    Example:
        >>> ln = RestrictedLayerNorm(4, mode="scratch")
        >>> ln.after_step(); bool((ln.weight >= 1).all())
        True
    """

    MODES = ("scratch", "finetune")

    def __init__(self, normalized_shape: int | tuple[int, ...], mode: str = "scratch",
                 ramp_steps: int = 3000, eps: float = 1e-5) -> None:
        super().__init__(normalized_shape, eps=eps, elementwise_affine=True, bias=True)
        if mode not in self.MODES:
            raise SparsifyError(f"RestrictedLayerNorm mode {mode!r} is unknown; expected one of {self.MODES}")
        self.mode = mode
        self.ramp = LinearRamp(ramp_steps)
        self.step_count = 0
        self.bias.requires_grad_(False)
        if mode == "scratch":
            with torch.no_grad():
                self.bias.zero_()
                self.weight.clamp_(min=1.0)

    @classmethod
    def from_layernorm(cls, ln: nn.LayerNorm, mode: str, ramp_steps: int = 3000) -> RestrictedLayerNorm:
        """Build a restricted copy of ``ln`` (weights copied; scratch mode zeroes beta).

        Raises:
            SparsifyError: if ``ln`` has no learnable gamma.
        """
        if ln.weight is None:
            raise SparsifyError(
                "the LayerNorm in front of the MLP has elementwise_affine=False, so there is no "
                "gamma to restrict; set Recipe(layernorm='keep') for this model"
            )
        new = cls(ln.normalized_shape, mode="finetune", ramp_steps=ramp_steps, eps=ln.eps)
        new = new.to(device=ln.weight.device, dtype=ln.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(ln.weight)
            if ln.bias is not None:
                new.bias.copy_(ln.bias)
            else:
                new.bias.zero_()
        if mode != "finetune":
            if mode not in cls.MODES:
                raise SparsifyError(f"RestrictedLayerNorm mode {mode!r} is unknown; expected one of {cls.MODES}")
            new.mode = mode
            with torch.no_grad():
                new.bias.zero_()
                new.weight.clamp_(min=1.0)
        return new

    def floor(self) -> float:
        """Current lower bound on ``|gamma|``."""
        return 1.0 if self.mode == "scratch" else self.ramp.value(self.step_count)

    @torch.no_grad()
    def after_step(self) -> None:
        """Advance the schedule one step and enforce the ``|gamma|`` floor in place."""
        self.step_count += 1
        if self.mode == "scratch":
            self.weight.clamp_(min=1.0)
            return
        sign = torch.where(self.weight >= 0, 1.0, -1.0).to(self.weight.dtype)
        self.weight.copy_(sign * self.weight.abs().clamp(min=self.floor()))

    def get_extra_state(self) -> Any:
        return {"step_count": self.step_count, "mode": self.mode}

    def set_extra_state(self, state: Any) -> None:
        self.step_count = int(state["step_count"])
        self.mode = str(state["mode"])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}, ramp_steps={self.ramp.steps}"
