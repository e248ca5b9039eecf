"""The MobileNetV2 inverted residual block (MBConv without squeeze-excitation), in 2D and 3D.

1x1 expand + BN + ReLU6 -> k x k depthwise (stride 1 or 2) + BN + ReLU6 -> 1x1 project + BN, with an identity
residual when the shape is unchanged (Sandler et al., 2018). Two networks here use it: PAM-UNet (expansion 6,
the paper's MBConv) and the Mobile UNet baseline of the UltraLightUNet ablation (expansion 2, and a 1x1
projection on the shortcut when the channels change, as that paper's 0.271M count requires).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.layers._nd import batchnorm_nd, conv_nd


def conv_bn_act(
    dims: int, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Bias-free conv (same padding) + BN (+ ReLU6)."""
    layers = [
        conv_nd(dims, cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        batchnorm_nd(dims, cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual block.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        expansion: width multiplier of the hidden (depthwise) layer; 1 skips the expand conv.
        kernel_size: depthwise kernel (odd).
        stride: 1, or 2 to halve every spatial dim.
        dims: 2 or 3 spatial dimensions.
        project_shortcut: when the channels change at stride 1, add a bias-free 1x1 conv on the shortcut
            (MKIR-style) instead of dropping the residual (MobileNetV2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: float = 6,
        kernel_size: int = 3,
        stride: int = 1,
        dims: int = 2,
        project_shortcut: bool = False,
    ):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, out={out_channels}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        hidden = int(round(in_channels * expansion))
        self.expand = conv_bn_act(dims, in_channels, hidden) if hidden != in_channels else nn.Identity()
        self.depthwise = conv_bn_act(dims, hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = conv_bn_act(dims, hidden, out_channels, act=False)
        self.identity = stride == 1 and in_channels == out_channels
        if not self.identity and stride == 1 and project_shortcut:
            self.shortcut = conv_nd(dims, in_channels, out_channels, 1, bias=False)
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if self.identity:
            return x + out
        if self.shortcut is not None:
            return self.shortcut(x) + out
        return out
