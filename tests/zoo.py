"""Small PyTorch definitions of every model family the runtime must run, and an ONNX export helper.

torchvision is not importable beside the pinned torch here, so the families are written out:
ResNet-18/50, VGG, MobileNetV2, MobileNetV3-small, EfficientNet-B0-style, ViT/DeiT-tiny (with
nn.MultiheadAttention or hand-written attention), a U-Net-style segmenter, a YOLOv8n-style detector and an MLP. Each takes
a width knob so tests run tiny versions and benchmarks realistic ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


def _bn_conv(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU) else act())
    return nn.Sequential(*layers)


# -- ResNet ---------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else _bn_conv(cin, cout, 1, stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 4
        self.body = nn.Sequential(_bn_conv(cin, mid, 1), _bn_conv(mid, mid, 3, stride), _bn_conv(mid, cout, 1, act=None))
        self.down = None if stride == 1 and cin == cout else _bn_conv(cin, cout, 1, stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        return F.relu(self.body(x) + idt)


class ResNet(nn.Module):
    def __init__(self, block: type[nn.Module], layers: list[int], width: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for i, n in enumerate(layers):
            cout = width * (2 ** i) * block.expansion
            for j in range(n):
                blocks.append(block(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))                       # (B, C, h, w)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(width: int = 64, classes: int = 10) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], width, classes)


def resnet50(width: int = 64, classes: int = 10) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], width, classes)


# -- VGG ------------------------------------------------------------------------------------------

def vgg(width: int = 16, classes: int = 10, image: int = 32) -> nn.Module:
    cfg = [width, "M", 2 * width, "M", 4 * width, 4 * width, "M"]
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    side = image // 8
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * side * side, 8 * width), nn.ReLU(True), nn.Dropout(0.5),
                         nn.Linear(8 * width, classes))


# -- MobileNetV2 / V3 / EfficientNet --------------------------------------------------------------

class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type[nn.Module] = nn.ReLU6,
                 se: bool = False, se_gate: type[nn.Module] = nn.Hardsigmoid, k: int = 3) -> None:
        super().__init__()
        hid = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_bn_conv(cin, hid, 1, act=act)]
        layers.append(_bn_conv(hid, hid, k, stride, groups=hid, act=act))
        if se:
            layers.append(SqueezeExcite(hid, gate=se_gate))
        layers.append(_bn_conv(hid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduce: int = 4, gate: type[nn.Module] = nn.Hardsigmoid) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(8, c // reduce), 1), nn.Conv2d(max(8, c // reduce), c, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)                    # (B, C, 1, 1)
        return x * self.gate(self.fc2(F.relu(self.fc1(s))))


def _mobile(cfg: list[tuple[int, int, int, int]], stem: int, last: int, classes: int, act: type[nn.Module],
            se_gate: type[nn.Module] = nn.Hardsigmoid, se_all: bool = False, repeats: int | None = None) -> nn.Module:
    """``repeats`` caps each stage's block count (tests: fewer blocks, same op mix, faster export)."""
    layers: list[nn.Module] = [_bn_conv(3, stem, 3, 2, act=act)]
    cin = stem
    for i, (expand, cout, n, stride) in enumerate(cfg):
        for j in range(n if repeats is None else min(n, repeats)):
            layers.append(InvertedResidual(cin, cout, stride if j == 0 else 1, expand, act,
                                           se=se_all or i % 2 == 1, se_gate=se_gate))
            cin = cout
    layers += [_bn_conv(cin, last, 1, act=act), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
               nn.Linear(last, classes)]
    return nn.Sequential(*layers)


def mobilenet_v2(width: float = 1.0, classes: int = 10, repeats: int | None = None) -> nn.Module:
    c = lambda v: max(8, int(v * width))  # noqa: E731
    cfg = [(1, c(16), 1, 1), (6, c(24), 2, 2), (6, c(32), 3, 2), (6, c(64), 4, 2), (6, c(96), 3, 1),
           (6, c(160), 3, 2), (6, c(320), 1, 1)]
    model = _mobile(cfg, c(32), c(1280), classes, nn.ReLU6, repeats=repeats)
    for m in model.modules():  # plain MobileNetV2 has no squeeze-excitation
        if isinstance(m, InvertedResidual):
            m.body = nn.Sequential(*[x for x in m.body if not isinstance(x, SqueezeExcite)])
    return model


def mobilenet_v3_small(width: float = 1.0, classes: int = 10, repeats: int | None = None) -> nn.Module:
    c = lambda v: max(8, int(v * width))  # noqa: E731
    cfg = [(1, c(16), 1, 2), (4, c(24), 2, 2), (4, c(40), 3, 2), (6, c(48), 2, 1), (6, c(96), 3, 2)]
    return _mobile(cfg, c(16), c(576), classes, nn.Hardswish, nn.Hardsigmoid, repeats=repeats)


def efficientnet_b0(width: float = 1.0, classes: int = 10, repeats: int | None = None) -> nn.Module:
    c = lambda v: max(8, int(v * width))  # noqa: E731
    cfg = [(1, c(16), 1, 1), (6, c(24), 2, 2), (6, c(40), 2, 2), (6, c(80), 3, 2), (6, c(112), 3, 1),
           (6, c(192), 4, 2), (6, c(320), 1, 1)]
    return _mobile(cfg, c(32), c(1280), classes, nn.SiLU, nn.Sigmoid, se_all=True, repeats=repeats)


# -- YOLO-style detector (YOLOv8n layout: Conv-BN-SiLU, C2f, SPPF, FPN/PAN neck, decoupled head) --

class C2f(nn.Module):
    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1, self.cv2 = _bn_conv(cin, 2 * self.c, 1, act=nn.SiLU), _bn_conv((2 + n) * self.c, cout, 1, act=nn.SiLU)
        self.m = nn.ModuleList(nn.Sequential(_bn_conv(self.c, self.c, act=nn.SiLU), _bn_conv(self.c, self.c, act=nn.SiLU))
                               for _ in range(n))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))                  # 2 x (B, c, H, W)
        for m in self.m:
            y.append(y[-1] + m(y[-1]) if self.shortcut else m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = _bn_conv(cin, cin // 2, 1, act=nn.SiLU), _bn_conv(cin * 2, cout, 1, act=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(F.max_pool2d(y[-1], 5, 1, 2))
        return self.cv2(torch.cat(y, 1))


class YoloDetector(nn.Module):
    """A YOLOv8n-shaped detector (width 16 = YOLOv8n's channels); output (B, 4 + classes, anchors)."""

    def __init__(self, width: int = 16, classes: int = 80) -> None:
        super().__init__()
        w, act = width, nn.SiLU
        self.stem = nn.Sequential(_bn_conv(3, w, 3, 2, act=act), _bn_conv(w, 2 * w, 3, 2, act=act), C2f(2 * w, 2 * w))
        self.p3 = nn.Sequential(_bn_conv(2 * w, 4 * w, 3, 2, act=act), C2f(4 * w, 4 * w, 2))
        self.p4 = nn.Sequential(_bn_conv(4 * w, 8 * w, 3, 2, act=act), C2f(8 * w, 8 * w, 2))
        self.p5 = nn.Sequential(_bn_conv(8 * w, 16 * w, 3, 2, act=act), C2f(16 * w, 16 * w), SPPF(16 * w, 16 * w))
        self.up4, self.up3 = C2f(24 * w, 8 * w, shortcut=False), C2f(12 * w, 4 * w, shortcut=False)
        self.down4, self.n4 = _bn_conv(4 * w, 4 * w, 3, 2, act=act), C2f(12 * w, 8 * w, shortcut=False)
        self.down5, self.n5 = _bn_conv(8 * w, 8 * w, 3, 2, act=act), C2f(24 * w, 16 * w, shortcut=False)
        self.box = nn.ModuleList(self._branch(c, 4, max(16, w)) for c in (4 * w, 8 * w, 16 * w))
        self.cls = nn.ModuleList(self._branch(c, classes, max(classes, 4 * w)) for c in (4 * w, 8 * w, 16 * w))

    @staticmethod
    def _branch(cin: int, cout: int, hid: int) -> nn.Module:
        return nn.Sequential(_bn_conv(cin, hid, act=nn.SiLU), _bn_conv(hid, hid, act=nn.SiLU), nn.Conv2d(hid, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(self.stem(x))                         # (B, 4w, H/8, W/8)
        p4 = self.p4(p3)                                   # (B, 8w, H/16, W/16)
        p5 = self.p5(p4)                                   # (B, 16w, H/32, W/32)
        u4 = self.up4(torch.cat([F.interpolate(p5, scale_factor=2.0), p4], 1))
        n3 = self.up3(torch.cat([F.interpolate(u4, scale_factor=2.0), p3], 1))
        n4 = self.n4(torch.cat([self.down4(n3), u4], 1))
        n5 = self.n5(torch.cat([self.down5(n4), p5], 1))
        outs = [torch.cat([b(f), c(f).sigmoid()], 1).flatten(2) for f, b, c in zip((n3, n4, n5), self.box, self.cls)]
        return torch.cat(outs, 2)                          # (B, 4 + classes, anchors)


# -- ViT / DeiT-tiny ------------------------------------------------------------------------------

class HandAttention(nn.Module):
    """Attention written with batched MatMul + Softmax, as many ViT codebases do."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5                              # (B, H, T, T)
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, attention: str, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = attention
        self.attn = (nn.MultiheadAttention(dim, heads, batch_first=True) if attention == "mha"
                     else HandAttention(dim, heads))
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), act(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + (self.attn(h, h, h, need_weights=False)[0] if self.attention == "mha" else self.attn(h))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, image: int = 32, patch: int = 8, dim: int = 64, depth: int = 2, heads: int = 2,
                 mlp_ratio: int = 4, classes: int = 10, attention: str = "mha", act: str = "gelu") -> None:
        super().__init__()
        acts = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU}
        self.embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, attention, acts[act]) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)                   # (B, T, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


# -- U-Net ----------------------------------------------------------------------------------------

class UNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 2) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.mid = _bn_conv(3, w), _bn_conv(w, 2 * w), _bn_conv(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2)
        self.dec2 = _bn_conv(4 * w, 2 * w)
        self.dec1 = _bn_conv(3 * w, w)
        self.out = nn.Conv2d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)                                  # (B, w, H, W)
        e2 = self.enc2(F.max_pool2d(e1, 2))                # (B, 2w, H/2, W/2)
        m = self.mid(F.max_pool2d(e2, 2))                  # (B, 4w, H/4, W/4)
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))    # ConvTranspose upsampling
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False), e1], 1))
        seg = self.out(d1)
        return seg + F.interpolate(F.avg_pool2d(seg, 2), scale_factor=2.0, mode="nearest")


def mlp(sizes: tuple[int, ...] = (784, 256, 256, 10)) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# -- export ---------------------------------------------------------------------------------------

def export_onnx(model: nn.Module, x: torch.Tensor, path: str | Path, *, dynamo: bool = True, opset: int | None = None,
                dynamic_batch: bool = True) -> Path:
    """Export ``model`` (in eval mode) with torch 2.13's dynamo exporter or the TorchScript one."""
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        if dynamo:
            if dynamic_batch and x.shape[0] == 1:  # torch.export specialises size-1 dims: trace with 2
                x = torch.cat([x, x])
            kwargs = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=64)},)} if dynamic_batch else {}
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, opset_version=opset,
                              input_names=["input"], output_names=["output"], **kwargs)
        else:
            # the TorchScript exporter cannot export MultiheadAttention's fused inference fast path
            torch.backends.mha.set_fastpath_enabled(False)
            axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset or 17,
                              input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path
