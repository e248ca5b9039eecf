"""A one-output-channel k x k convolution computed as depthwise products summed over the input channels: what the
``split-one-channel-convs`` deploy rewrite (:mod:`edgeseg.converters.rewrites`) puts in the exported copy. A
module-level class, so that a rewritten model pickles (parallel conversion ships it to worker processes)."""

from __future__ import annotations

import torch
from torch import nn


class DepthwiseSum(nn.Module):
    """``conv`` (k x k, one output channel, groups 1) as a depthwise convolution plus a channel sum."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        c = conv.in_channels
        self.dw = type(conv)(c, c, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                             dilation=conv.dilation, groups=c, bias=False, padding_mode=conv.padding_mode)
        with torch.no_grad():
            self.dw.weight.copy_(conv.weight.reshape(c, 1, *conv.kernel_size))
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).sum(dim=1, keepdim=True)
        return y if self.bias is None else y + self.bias.reshape(1, 1, *([1] * (y.dim() - 2)))
