"""Minimal look-alikes of smooth-activation model families for the relufy tests (no torchvision).

* :func:`sequential_cnn` - nn.Sequential with SiLU, Hardswish, GELU and ReLU6.
* :class:`TinyMobileNetV3` - torchvision-style: Hardswish stem, inverted residual with a
  hand-written ``HSwish`` (``x * hardsigmoid(x)``) and squeeze-excitation (ReLU, Hardsigmoid gate).
* :class:`TinyResNet` - BasicBlocks whose one ``self.act`` (SiLU) is called twice.
* :class:`TinyEfficientNet` - MBConv with SiLU and an SE block gated by Sigmoid.
* :class:`TinyYolo` - Ultralytics-style ``Conv`` whose ``default_act`` SiLU is one class-level
  instance shared by every Conv, plus a C2f-like split/concat.
* ViT: ``tests.exporters.sparsity.tiny_models.TinyViT(act=nn.GELU)``.
"""
from __future__ import annotations

import torch
from torch import nn


def sequential_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.Hardswish(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4),
    )


class HSwish(nn.Module):
    """A hand-written h-swish, as in many MobileNetV3 ports: ``x * hardsigmoid(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class SE(nn.Module):
    def __init__(self, c: int, squeeze: int, gate: type[nn.Module], act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, squeeze, 1), act(), nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


def cba(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class InvertedResidualSE(nn.Module):
    """Expand -> depthwise -> SE -> project, as MobileNetV3's and EfficientNet's blocks."""

    def __init__(self, c: int, exp: int, act: type[nn.Module], gate: type[nn.Module], se_act=nn.ReLU) -> None:
        super().__init__()
        self.block = nn.Sequential(cba(c, exp, 1, act=act), cba(exp, exp, 3, groups=exp, act=act),
                                   SE(exp, 4, gate, se_act), nn.Conv2d(exp, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class TinyMobileNetV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(cba(3, 8, 3, 2, act=nn.Hardswish),
                                      InvertedResidualSE(8, 16, HSwish, nn.Hardsigmoid),
                                      cba(8, 24, 1, act=nn.Hardswish))
        self.classifier = nn.Sequential(nn.Linear(24, 16), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class TinyEfficientNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(cba(3, 8, 3, 2), InvertedResidualSE(8, 16, nn.SiLU, nn.Sigmoid, nn.SiLU))
        self.classifier = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.act = nn.SiLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + x)  # one module, two calls


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cba(3, 8, 3, 2)
        self.layer1 = nn.Sequential(BasicBlock(8), BasicBlock(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer1(self.stem(x)).mean(dim=(2, 3)))


class Conv(nn.Module):
    """Ultralytics' Conv: one SiLU instance shared by every Conv (a class attribute)."""

    default_act = nn.SiLU()

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = self.default_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class TinyYolo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.down = Conv(3, 8, 3), Conv(8, 16, 3, 2)
        self.cv1, self.m, self.cv2 = Conv(16, 16), Conv(8, 8, 3), Conv(24, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(self.down(self.stem(x))).split(8, dim=1)  # C2f-like
        y = self.cv2(torch.cat([a, b, self.m(b)], dim=1))
        return self.head(y.mean(dim=(2, 3)))
