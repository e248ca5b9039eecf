"""Global pooling written as reductions.

litert-torch has no lowering for ``aten.adaptive_max_pool2d``; a reduction over the spatial axes exports to
every target. These are modules (not functional calls) so that the FLOP counter can see them, as the
ptflops convention the papers use counts ``AdaptiveAvgPool``/``AdaptiveMaxPool`` as one op per input element.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeseg.layers._nd import spatial_axes


class GlobalAvgPool(nn.Module):
    """Mean over all spatial axes, keeping dims: (N, C, *S) -> (N, C, 1, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=spatial_axes(x), keepdim=True)


class GlobalMaxPool(nn.Module):
    """Max over all spatial axes, keeping dims: (N, C, *S) -> (N, C, 1, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=spatial_axes(x), keepdim=True)
