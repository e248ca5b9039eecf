"""Feature recalibration blocks from the attention survey (channel, spatial and coordinate attention).

Each block takes a feature map and returns it reweighted (same shape), in 2D or 3D (``dims``), with global
pooling written as reductions (export-safe, see :mod:`edgeseg.layers.pooling`):

- :class:`SqueezeExcitation` (Hu et al., SENet): global average pool -> 1x1 reduce -> ReLU -> 1x1 expand ->
  sigmoid channel weights.
- :class:`ECA` (Wang et al., ECA-Net): global average pool -> a k-wide 1D conv across channels (k grows with
  log2 of the channel count, see :func:`eca_kernel_size`) -> sigmoid; no dimensionality reduction.
- :data:`CBAM` (Woo et al.): channel attention on average- and max-pooled descriptors through a shared MLP,
  then spatial attention from a 7x7 conv on the channel mean and max. It is the same computation as
  UltraLightUNet's CMFA, so it is that class.
- :class:`CoordinateAttention` (Hou et al.): channel attention factorised along each spatial axis, so the
  weights keep the position along that axis.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeseg.layers._nd import conv_nd, spatial_axes
from edgeseg.layers.attention import CMFA
from edgeseg.layers.pooling import GlobalAvgPool

CBAM = CMFA
"""CBAM: channel attention (avg + max pool, shared MLP, ratio 16) then spatial attention (7x7 conv)."""


def _reduced(channels: int, ratio: int, minimum: int = 1) -> int:
    if channels < 1 or ratio < 1:
        raise ValueError(f"channels and ratio must be positive, got {channels}, {ratio}")
    return max(channels // ratio, minimum)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation channel attention.

    Args:
        channels: input channels.
        ratio: reduction ratio of the bottleneck (16 in the paper).
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, channels: int, ratio: int = 16, dims: int = 2):
        super().__init__()
        hidden = _reduced(channels, ratio)
        self.pool = GlobalAvgPool()
        self.fc1 = conv_nd(dims, channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = conv_nd(dims, hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel: int(|(log2(C) + b) / gamma|), plus one when that is even."""
    k = int(abs(math.log2(channels) / gamma + b / gamma))
    return k if k % 2 else k + 1


class ECA(nn.Module):
    """Efficient channel attention: a 1D conv across the pooled channel descriptor.

    Args:
        channels: input channels (sets the kernel when ``kernel_size`` is None).
        kernel_size: odd 1D kernel; default from :func:`eca_kernel_size`.
        dims: 2 or 3 spatial dimensions (the block itself is the same for both).
    """

    def __init__(self, channels: int, kernel_size: int | None = None, dims: int = 2):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {k}")
        self.pool = GlobalAvgPool()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = self.conv(self.pool(x).reshape(n, 1, c))  # channels as a 1D sequence
        return x * self.gate(y).reshape(n, c, *([1] * (x.dim() - 2)))


class CoordinateAttention(nn.Module):
    """Coordinate attention: one direction-aware attention vector per spatial axis.

    The input is average-pooled over all but one spatial axis for each axis; the pooled strips are
    concatenated, mixed by a shared 1x1 conv + BN + h-swish, split again, and each strip gives sigmoid
    weights along its axis. The output is ``x`` times the product of the per-axis weights.

    Args:
        channels: input channels.
        ratio: reduction ratio of the shared conv (32 in the paper; at least 8 hidden channels).
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, channels: int, ratio: int = 32, dims: int = 2):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        hidden = _reduced(channels, ratio, minimum=8)
        self.mix = nn.Sequential(
            nn.Conv1d(channels, hidden, 1, bias=True), nn.BatchNorm1d(hidden), nn.Hardswish(inplace=True)
        )
        self.axis_convs = nn.ModuleList(nn.Conv1d(hidden, channels, 1) for _ in range(dims))
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        axes = spatial_axes(x)
        strips = [x.mean(dim=tuple(a for a in axes if a != axis)) for axis in axes]  # each (N, C, L_axis)
        lengths = [s.shape[-1] for s in strips]
        mixed = torch.split(self.mix(torch.cat(strips, dim=2)), lengths, dim=2)
        out = x
        for i, (strip, conv) in enumerate(zip(mixed, self.axis_convs)):
            shape = [n, c] + [1] * len(axes)
            shape[2 + i] = lengths[i]
            out = out * self.gate(conv(strip)).reshape(shape)
        return out
