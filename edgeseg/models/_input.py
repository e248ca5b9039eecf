"""The input check every model runs before its forward pass (skipped while exporting)."""

from __future__ import annotations

import torch


def check_input(x: torch.Tensor, in_channels: int, dims: int, multiple: int) -> None:
    """Raise ValueError, saying how to fix it, for an input a model cannot take.

    Args:
        x: the batch, (N, C, H, W) or (N, C, D, H, W).
        in_channels: the channels the model was built for.
        dims: 2 or 3 spatial dimensions.
        multiple: every spatial side must be a multiple of this.
    """
    layout = "(N, C, H, W)" if dims == 2 else "(N, C, D, H, W)"
    if x.dim() != 2 + dims:
        raise ValueError(f"expected an {layout} batch, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got {x.shape[1]}")
    spatial = tuple(x.shape[2:])
    if any(s % multiple for s in spatial):
        padded = "x".join(str(-(-s // multiple) * multiple) for s in spatial)
        raise ValueError(
            f"input {'x'.join(map(str, spatial))} is not divisible by {multiple}: resize or pad it to {padded}"
        )
