"""Small inspection models for the demo, and ``load_pretrained`` for the shipped ones.

* :class:`InspectionCNN`: five Conv-BN-ReLU blocks (16-64 channels, three stride-2),
  global max pooling (a defect is local: max keeps a small strong response that an
  average would dilute) and a two-layer ReLU head.
* :class:`InspectionViT`: ViT-tiny, 8x8 patches, ReLU MLPs (the runtime skips their
  inactive neurons), attention written with MatMul + Softmax, max pooling over tokens.
  The Peng et al. modules (``sparsify(model, "peng-scratch", tokens=model.tokens)``) apply.
* :class:`InspectionUNet`: a three-level ReLU U-Net segmenter (8-16-32 channels) whose
  every conv after the first reads ReLU outputs only (nearest upsampling keeps zeros), so
  the runtime can skip inactive inputs all the way through; per-pixel logits
  ``[background, defect]`` (trained by :mod:`exporters.demo.train_segmenter`).

The shipped checkpoints live in ``exporters/demo/assets/<name>.pt``: a dict with the
model kwargs, the sparsity recipe it was trained with, its ``state_dict`` and metrics
(written by ``python -m exporters.demo.train``).

Example:
    >>> import torch
    >>> InspectionCNN()(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 2])
"""
from __future__ import annotations

import io
import logging
from importlib import resources
from typing import Any

import torch
from torch import nn

from edge_runtime.errors import InvalidArgumentError, InvalidModelError

log = logging.getLogger(__name__)


class GlobalMaxPool(nn.Module):
    """Max over the spatial axes, (B, C, H, W) -> (B, C, 1, 1).

    Same function as ``nn.AdaptiveMaxPool2d(1)``, written with ``amax`` because litert-torch
    cannot convert adaptive max pooling (the TFLite export would fail) and it has no weights,
    so checkpoints are unaffected.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=True)


class InspectionCNN(nn.Module):
    """Conv-BN-ReLU feature extractor, global max pool, Linear-ReLU-Linear head.

    Args:
        width: channels of the first block; later blocks use 2x and 4x.
        classes: output logits (2: ok, defect).

    Example:
        >>> sum(p.numel() for p in InspectionCNN().parameters()) < 100_000
        True
    """

    def __init__(self, width: int = 16, classes: int = 2) -> None:
        super().__init__()
        w = width
        # (cin, cout, stride): 64 -> 32 -> 16 -> 8 px; ~7.5 M multiply-adds at 64x64 with width 16
        plan = [(3, w, 2), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride in plan:
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)        # (B, 4w, H/8, W/8)
        self.pool = GlobalMaxPool()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w, 4 * w), nn.ReLU(), nn.Linear(4 * w, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))  # (B, classes)

    def sparse_input_layers(self) -> list[str]:
        """Conv/Linear layers whose input is a ReLU output (where the runtime can skip zeros)."""
        convs = [f"features.{i}" for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        return convs[1:] + ["head.3"]


class Attention(nn.Module):
    """Multi-head self-attention as batched MatMul + Softmax (exports to stock ONNX ops)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        att = (qkv[0] @ qkv[1].transpose(-2, -1)) * hd**-0.5                        # (B, H, T, T)
        y = (att.softmax(dim=-1) @ qkv[2]).transpose(1, 2).reshape(b, t, d)         # (B, T, D)
        return self.proj(y)


class Block(nn.Module):
    """Pre-norm Transformer block; modules registered in execution order for ``sparsify``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.ReLU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class InspectionViT(nn.Module):
    """ViT-tiny: patch embedding, learned positions, ReLU-MLP blocks, token max pool, head.

    Args:
        image: input side in pixels (a multiple of ``patch``).
        patch: patch side; ``(image // patch) ** 2`` tokens.
        dim: token width. depth: blocks. heads: attention heads. mlp_ratio: MLP hidden/dim.
        classes: output logits.

    Example:
        >>> InspectionViT().tokens
        64
    """

    def __init__(self, image: int = 64, patch: int = 8, dim: int = 64, depth: int = 3, heads: int = 2,
                 mlp_ratio: int = 4, classes: int = 2) -> None:
        super().__init__()
        if image % patch:
            raise ValueError(f"image size {image} must be a multiple of patch {patch}")
        self.tokens = (image // patch) ** 2
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, self.tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, T, D)
        x = self.norm(self.blocks(x))
        return self.head(x.amax(dim=1))                          # (B, classes)

    def sparse_input_layers(self) -> list[str]:
        """The MLPs' second Linear layers (their input is the ReLU-family output)."""
        return [f"blocks.{i}.mlp.2" for i in range(len(self.blocks))]


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Conv3x3 (no bias) -> BatchNorm -> ReLU: a block ``sparsify`` finds (exporters.sparsity.discovery)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class InspectionUNet(nn.Module):
    """Three-level ReLU U-Net: two conv blocks per level, max-pool down, nearest up, skip concat.

    Nearest upsampling (not a transposed conv) keeps the ReLU zeros, so the decoder convs read
    only ReLU outputs; with the 1x1 head, every conv after the first has a sparse input.

    Args:
        width: channels of the first level; the others use 2x and 4x.
        classes: per-pixel logits (2: background, defect).

    Example:
        >>> InspectionUNet()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, width: int = 8, classes: int = 2) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(conv_block(3, w), conv_block(w, w))                  # (B, w, H, W)
        self.enc2 = nn.Sequential(conv_block(w, 2 * w), conv_block(2 * w, 2 * w))      # (B, 2w, H/2, W/2)
        self.mid = nn.Sequential(conv_block(2 * w, 4 * w), conv_block(4 * w, 4 * w))   # (B, 4w, H/4, W/4)
        self.dec2 = nn.Sequential(conv_block(6 * w, 2 * w), conv_block(2 * w, 2 * w))  # (B, 2w, H/2, W/2)
        self.dec1 = nn.Sequential(conv_block(3 * w, w), conv_block(w, w))              # (B, w, H, W)
        self.head = nn.Conv2d(w, classes, 1)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], 1))
        return self.head(d1)                                    # (B, classes, H, W)

    def sparse_input_layers(self) -> list[str]:
        """Every conv after the first: their inputs are ReLU outputs (pooled, upsampled or concatenated)."""
        convs = [n for n, m in self.named_modules() if isinstance(m, nn.Conv2d)]
        return convs[1:]


MODELS: dict[str, type[nn.Module]] = {"cnn": InspectionCNN, "vit": InspectionViT, "unet": InspectionUNet}
#: The classifiers (``edge-runtime demo --model``, ``python -m exporters.demo.train``); "unet" segments.
CLASSIFIERS = ("cnn", "vit")
#: Sparsity recipe each shipped model is trained with (exporters.sparsity.RECIPES).
DEFAULT_RECIPES = {"cnn": "fatrelu", "vit": "peng-scratch", "unet": "fatrelu"}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Return a freshly initialised demo model ``name`` ("cnn", "vit" or "unet").

    Raises:
        InvalidArgumentError: on an unknown name (the message lists the available ones).
    """
    _check_name(name)
    return MODELS[name](**kwargs)


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise InvalidArgumentError(f"unknown demo model {name!r}; available: {sorted(MODELS)}.")


def apply_recipe(model: nn.Module, recipe: str | None, **overrides: Any) -> Any:
    """``sparsify`` a demo model with ``recipe`` (None: leave it alone and return None)."""
    if recipe is None:
        return None
    from exporters.sparsity import sparsify

    if recipe.startswith("peng"):
        overrides.setdefault("tokens", getattr(model, "tokens", None))
    return sparsify(model, recipe, **overrides)


def checkpoint_bytes(name: str) -> bytes:
    """Raw bytes of the shipped checkpoint ``assets/<name>.pt``.

    Raises:
        InvalidModelError: when the package was installed without its assets.
    """
    ref = resources.files("exporters.demo") / "assets" / f"{name}.pt"
    if not ref.is_file():
        raise InvalidModelError(
            f"shipped demo checkpoint {name}.pt not found in exporters/demo/assets; reinstall with "
            "package data (pyproject: exporters = ['demo/assets/*']) or train one: "
            f"python -m exporters.demo.train --model {name} --out DIR"
        )
    return ref.read_bytes()


def load_checkpoint(source: str | bytes | Any) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint (path, raw bytes or a loaded dict).

    Returns:
        ``(model in eval mode, checkpoint dict without the state_dict)``.
    """
    if isinstance(source, dict):
        ckpt = source
    else:
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):  # older checkpoints
            ckpt = torch.load(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                              map_location="cpu", weights_only=True)
    model = build_model(ckpt["name"], **ckpt["model_kwargs"])
    handle = apply_recipe(model, ckpt.get("recipe"), **ckpt.get("recipe_overrides", {}))
    model.load_state_dict(ckpt["state_dict"])
    if handle is not None:
        handle.remove_hooks()
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval(), info


def load_pretrained(name: str) -> nn.Module:
    """Load the shipped, sparsity-trained demo model ``name`` ("cnn", "vit" or "unet"); no downloads.

    Returns:
        The model in eval mode; it takes normalised ``(N, 3, 64, 64)`` images
        (``exporters.demo.dataset.to_tensor``) and returns logits ``[ok, defect]``
        (``(N, 2)``; the "unet": per pixel, ``(N, 2, 64, 64)``).

    Raises:
        InvalidArgumentError: on an unknown name. InvalidModelError: when the assets are missing.

    Example:
        >>> load_pretrained("cnn").training
        False
    """
    _check_name(name)
    model, _info = load_checkpoint(checkpoint_bytes(name))
    return model


def pretrained_info(name: str) -> dict[str, Any]:
    """The shipped checkpoint's metadata (kwargs, recipe, data config, metrics, command)."""
    return load_checkpoint(checkpoint_bytes(name))[1]
