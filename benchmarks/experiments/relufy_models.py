"""Small deployable-style classifiers for the ReLU-fication experiment (1x28x28 inputs).

* :func:`mobilenet_v3_small` - MobileNetV3-small-style: torchvision's block structure
  (Conv-BN-Hardswish stem, inverted residuals with depthwise convs, squeeze-excitation with a
  ReLU and a Hardsigmoid gate, ReLU in the early blocks and Hardswish later, a Hardswish
  1x1 "last conv" and a Linear-Hardswish-Linear classifier), widths scaled to 28 px.
* :func:`yolo_backbone` - YOLO-style backbone: Conv-BN-SiLU ``Conv`` blocks, stride-2
  downsampling, C2f blocks (split, residual bottlenecks, concat) and an SPPF, followed by a
  pooled Linear classifier head.

torchvision is not installable next to torch 2.13 here, so the definitions are local.

Example:
    >>> import torch
    >>> mobilenet_v3_small()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """torchvision's SE: avgpool -> 1x1 conv -> ReLU -> 1x1 conv -> Hardsigmoid -> scale."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))  # (N, C, 1, 1)
        return x * s


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                act: type[nn.Module] = nn.Hardswish) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> activation, 'same' padding."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise kxk -> (SE) -> project 1x1 (linear), residual when shapes match."""

    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type[nn.Module],
                 stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(conv_bn_act(cin, exp, 1, act=act))
        layers.append(conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcitation(exp, max(8, exp // 4)))
        layers.append(nn.Sequential(nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (kernel, expanded, out, SE, activation, stride): torchvision's small config, cut to 28 px
_MBV3_SMALL = ((3, 64, 24, False, nn.ReLU, 2), (3, 96, 24, False, nn.ReLU, 1),
               (5, 144, 40, True, nn.Hardswish, 2), (5, 240, 40, True, nn.Hardswish, 1),
               (5, 240, 48, True, nn.Hardswish, 1), (5, 288, 48, True, nn.Hardswish, 1))


def mobilenet_v3_small(num_classes: int = 10, last: int = 288, hidden: int = 256) -> nn.Module:
    """MobileNetV3-small-style classifier for (N, 1, 28, 28): 28 -> 14 -> 7 px."""
    layers: list[nn.Module] = [conv_bn_act(1, 16, 3, 1)]  # stem stride 1 at 28 px
    cin = 16
    for k, exp, cout, se, act, stride in _MBV3_SMALL:
        layers.append(InvertedResidual(cin, k, exp, cout, se, act, stride))
        cin = cout
    layers.append(conv_bn_act(cin, last, 1))
    model = nn.Sequential()
    model.features = nn.Sequential(*layers)  # (N, last, 7, 7)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.classifier = nn.Sequential(nn.Linear(last, hidden), nn.Hardswish(), nn.Dropout(0.2),
                                     nn.Linear(hidden, num_classes))
    return model


def conv(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    """YOLO's ``Conv``: Conv2d (no bias) -> BatchNorm2d -> SiLU."""
    return conv_bn_act(cin, cout, k, stride, act=nn.SiLU)


class Bottleneck(nn.Module):
    """YOLO bottleneck: 3x3 Conv -> 3x3 Conv, plus the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = conv(c, c, 3), conv(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's C2f: 1x1 Conv, split in two halves, n bottlenecks on the second, concat all, 1x1 Conv."""

    def __init__(self, cin: int, cout: int, n: int = 1) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = conv(cin, 2 * self.c, 1)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))
        self.cv2 = conv((2 + n) * self.c, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = list(self.cv1(x).split(self.c, dim=1))  # 2 x (N, c, H, W)
        for m in self.m:
            ys.append(m(ys[-1]))
        return self.cv2(torch.cat(ys, dim=1))


class SPPF(nn.Module):
    """YOLO's SPPF: 1x1 Conv, three chained 5x5 max-pools, concat, 1x1 Conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        hidden = cin // 2
        self.cv1, self.cv2 = conv(cin, hidden, 1), conv(4 * hidden, cout, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, dim=1))


def yolo_backbone(num_classes: int = 10, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> nn.Module:
    """YOLO-style backbone + classifier for (N, 1, 28, 28): 28 -> 14 -> 7 px."""
    a, b, c, d = widths
    model = nn.Sequential()
    model.backbone = nn.Sequential(conv(1, a, 3, 1), conv(a, b, 3, 2), C2f(b, b),    # (N, b, 14, 14)
                                   conv(b, c, 3, 2), C2f(c, c), conv(c, d, 3, 1),    # (N, d, 7, 7)
                                   C2f(d, d), SPPF(d, d))
    model.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(d, num_classes))
    return model


MODELS = {"mobilenet_v3": mobilenet_v3_small, "yolo": yolo_backbone}
