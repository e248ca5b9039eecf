"""Multi-kernel convolution blocks of UltraLightUNet (Rahman & Marculescu).

- MKDC, multi-kernel depthwise convolution: parallel depthwise convs (kernels [1, 3, 5] by default), each
  conv + BN + ReLU6, summed (paper eq. 2).
- channel shuffle (ShuffleNet) so information crosses the depthwise groups.
- MKIR, multi-kernel inverted residual (paper eq. 1): 1x1 expand (x2) + BN + ReLU6 -> MKDC -> channel shuffle
  (groups = gcd(expanded, out)) -> 1x1 project + BN, plus the residual (a bias-free 1x1 conv on the shortcut
  when channels change).

Attribute names (``pconv1``, ``multi_scale_dwconv.dwconvs``, ``pconv2``, ``conv1x1``) follow the authors'
released MK-UNet code so their checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

import torch
from torch import nn

from edgeseg.layers._nd import batchnorm_nd, conv_nd


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups: (N, g*c, *S) -> (N, c*g, *S) (ShuffleNet)."""
    if groups == 1:
        return x
    n, c = x.shape[0], x.shape[1]
    spatial = x.shape[2:]
    x = x.reshape(n, groups, c // groups, *spatial).transpose(1, 2)
    return x.reshape(n, c, *spatial)


class MultiKernelDepthwiseConv(nn.Module):
    """MKDC: sum of parallel depthwise conv + BN + ReLU6 branches, one per kernel size.

    Args:
        channels: input = output channels.
        kernel_sizes: odd kernel sizes, one branch each.
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (1, 3, 5), dims: int = 2):
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, got {list(kernel_sizes)}")
        self.dwconvs = nn.ModuleList(
            nn.Sequential(
                conv_nd(dims, channels, channels, k, 1, k // 2, groups=channels, bias=False),
                batchnorm_nd(dims, channels),
                nn.ReLU6(inplace=True),
            )
            for k in kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dwconvs[0](x)
        for branch in self.dwconvs[1:]:
            out = out + branch(x)
        return out


class MKIR(nn.Module):
    """Multi-kernel inverted residual block (stride 1).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_sizes: MKDC kernel sizes.
        expansion: expansion factor of the first 1x1 conv.
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = (1, 3, 5),
        expansion: float = 2,
        dims: int = 2,
    ):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got in={in_channels}, out={out_channels}")
        hidden = int(in_channels * expansion)
        self.pconv1 = nn.Sequential(
            conv_nd(dims, in_channels, hidden, 1, 1, 0, bias=False),
            batchnorm_nd(dims, hidden),
            nn.ReLU6(inplace=True),
        )
        self.multi_scale_dwconv = MultiKernelDepthwiseConv(hidden, kernel_sizes, dims)
        self.shuffle_groups = gcd(hidden, out_channels)
        self.pconv2 = nn.Sequential(
            conv_nd(dims, hidden, out_channels, 1, 1, 0, bias=False),
            batchnorm_nd(dims, out_channels),
        )
        if in_channels != out_channels:
            self.conv1x1 = conv_nd(dims, in_channels, out_channels, 1, 1, 0, bias=False)
        else:
            self.conv1x1 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.multi_scale_dwconv(self.pconv1(x))
        out = self.pconv2(channel_shuffle(out, self.shuffle_groups))
        shortcut = x if self.conv1x1 is None else self.conv1x1(x)
        return shortcut + out
