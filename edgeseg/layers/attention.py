"""Convolutional attention blocks of UltraLightUNet: channel and spatial attention (together CMFA), MKIRA,
and the grouped attention gate (GAG).

Attribute names (``fc1``/``fc2``, ``conv``, ``W_g``/``W_x``/``psi``) follow the authors' released MK-UNet code
so their checkpoints load with ``strict=True``. Every block works in 2D and 3D (``dims``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgeseg.layers._nd import batchnorm_nd, conv_nd
from edgeseg.layers.mkconv import MKIR
from edgeseg.layers.pooling import GlobalAvgPool, GlobalMaxPool


class ChannelAttention(nn.Module):
    """Channel attention (CBAM-style): sigmoid(MLP(avg-pool(x)) + MLP(max-pool(x))), returns the weights.

    The MLP is two bias-free 1x1 convs with a ReLU, reducing by ``ratio`` (clipped so at least one hidden
    channel remains).

    Args:
        channels: input channels.
        ratio: reduction ratio.
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, channels: int, ratio: int = 16, dims: int = 2):
        super().__init__()
        if channels < 1 or ratio < 1:
            raise ValueError(f"channels and ratio must be positive, got {channels}, {ratio}")
        hidden = max(channels // min(ratio, channels), 1)
        self.avg_pool = GlobalAvgPool()
        self.max_pool = GlobalMaxPool()
        self.fc1 = conv_nd(dims, channels, hidden, 1, bias=False)
        self.activation = nn.ReLU(inplace=True)
        self.fc2 = conv_nd(dims, hidden, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(self.activation(self.fc1(self.avg_pool(x))))
        mx = self.fc2(self.activation(self.fc1(self.max_pool(x))))
        return self.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """Spatial attention: sigmoid(conv_k([channel-mean, channel-max])), returns the (N, 1, *S) weights.

    Args:
        kernel_size: the large kernel (7 in the paper).
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, kernel_size: int = 7, dims: int = 2):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.conv = conv_nd(dims, 2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.sigmoid(self.conv(pooled))


class CMFA(nn.Module):
    """Convolutional multi-focal attention (paper eq. 3-4): channel attention, then spatial attention.

    Args:
        channels: input channels.
        ratio: channel-attention reduction ratio.
        kernel_size: spatial-attention kernel.
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, channels: int, ratio: int = 16, kernel_size: int = 7, dims: int = 2):
        super().__init__()
        self.ca = ChannelAttention(channels, ratio, dims)
        self.sa = SpatialAttention(kernel_size, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ca(x) * x
        return self.sa(x) * x


class MKIRA(nn.Module):
    """Multi-kernel inverted residual attention (paper eq. 5): MKIR(CMFA(x)).

    UltraLightUNet itself shares one spatial attention across its decoder stages and so wires CA, SA and MKIR
    directly; this block is the standalone form for other networks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = (1, 3, 5),
        ratio: int = 16,
        dims: int = 2,
    ):
        super().__init__()
        self.cmfa = CMFA(in_channels, ratio, dims=dims)
        self.mkir = MKIR(in_channels, out_channels, kernel_sizes, dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mkir(self.cmfa(x))


class GroupedAttentionGate(nn.Module):
    """Grouped attention gate (paper eq. 6): x * sigmoid(BN(conv1x1(ReLU(BN(gconv(g)) + BN(gconv(x)))))).

    Args:
        gate_channels: channels of the gating signal ``g`` (the decoder feature).
        skip_channels: channels of the skip feature ``x``.
        inter_channels: channels of the intermediate map; defaults to ``skip_channels // 2``.
        kernel_size: group-conv kernel (3 in the paper; 1 gives Oktay's ungrouped gate).
        groups: conv groups; defaults to ``inter_channels`` as in the paper (C/2 groups).
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(
        self,
        gate_channels: int,
        skip_channels: int,
        inter_channels: int | None = None,
        kernel_size: int = 3,
        groups: int | None = None,
        dims: int = 2,
    ):
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(skip_channels // 2, 1)
        groups = inter if groups is None else groups
        if kernel_size == 1:
            groups = 1
        for name, c in (("gate_channels", gate_channels), ("skip_channels", skip_channels), ("inter", inter)):
            if c % groups:
                raise ValueError(f"{name}={c} is not divisible by groups={groups}; choose groups dividing it")
        pad = kernel_size // 2
        self.W_g = nn.Sequential(
            conv_nd(dims, gate_channels, inter, kernel_size, 1, pad, groups=groups, bias=True),
            batchnorm_nd(dims, inter),
        )
        self.W_x = nn.Sequential(
            conv_nd(dims, skip_channels, inter, kernel_size, 1, pad, groups=groups, bias=True),
            batchnorm_nd(dims, inter),
        )
        self.psi = nn.Sequential(
            conv_nd(dims, inter, 1, 1, 1, 0, bias=True),
            batchnorm_nd(dims, 1),
            nn.Sigmoid(),
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        psi = self.psi(self.activation(self.W_g(g) + self.W_x(x)))
        return x * psi
