"""Progressive Luong Attention (PLA) and its attention regulariser, from PAM-UNet (Das, Jha et al.).

Seed paper, Sec. III-B and eq. 4-8: the lower (coarser) decoder feature goes through an inverted-residual
block and a transposed conv and is split into Key and Value; the encoder's residual feature at the skip is
the Query; A = sigma(Q K^T / sqrt(d_k)) and the attended feature is A V. Applied on every skip from coarse to
fine, each stage attends with keys from the stage below it (hence "progressive"). The training loss adds
lambda * R(A), R(A) = mean((A - mean(A))^2), lambda = 0.01 (eq. 6-8).

Choices this implementation makes (the paper leaves them open):

- sigma is the softmax over the keys: the paper defines the Luong weights with a softmax (eq. 3) and calls
  it sigma; eq. 5's second sigma would apply it twice and is read as naming the same weights (W = A).
- Keys and values are average-pooled by ``kv_pool`` before the product, so a 64x64 query map attends to an
  8x8 key grid instead of 64x64: the authors' public code attends over all positions, ~20 GMACs of
  attention products at 128x128 input (15x the whole network's budget of 1.32 G); pooled, ~15 MMACs.
- The attended values (``key_dim`` channels) are projected back to the skip's width by a 1x1 conv + BN and
  added to the skip (a residual, as in the public code's ``gamma * out + x``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgeseg.layers._nd import batchnorm_nd, conv_nd, conv_transpose_nd
from edgeseg.layers.inverted_residual import InvertedResidual
from edgeseg.layers.self_attention import dot_product_attention, from_tokens, kv_pool_nd, to_tokens

ATTENTION_REG_WEIGHT = 0.01
"""lambda of the seed paper's eq. 8: L_total = L_seg + 0.01 * R(A)."""


def attention_regularizer(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """R(A) of PAM-UNet eq. 7: the population variance of each attention map, averaged.

    Args:
        maps: attention weights, each (N, L_query, L_key) as returned by
            ``PAMUNet.forward_with_attention`` (or any (N, ...) tensors).

    Returns:
        A scalar: for every map and sample, mean((A - mean(A))^2) over the map, then the mean of those.

    Raises:
        ValueError: no maps given.

    Examples:
        >>> logits, maps = model.forward_with_attention(images)
        >>> loss = bce(logits, masks) + ATTENTION_REG_WEIGHT * attention_regularizer(maps)
    """
    if not maps:
        raise ValueError("attention_regularizer needs at least one attention map")
    terms = [a.flatten(1).var(dim=1, unbiased=False).mean() for a in maps]
    return torch.stack(terms).mean()


class ProgressiveLuongAttention(nn.Module):
    """One PLA unit: the skip ``x`` (query) attends to keys/values made from the coarser decoder feature ``g``.

    Args:
        gate_channels: channels of ``g``.
        skip_channels: channels of ``x`` (also the output's).
        key_dim: width d_k of queries, keys and values.
        scale: spatial ratio of ``x`` to ``g``: 2 (a 2x2 stride-2 transposed conv, as in PAM-UNet), or 1 (a
            1x1 conv, when both have the same size).
        kv_pool: average-pooling factor of keys/values after the transposed conv.
        expansion: expansion of the inverted-residual block on ``g``.
        dims: 2 or 3 spatial dimensions.

    ``forward(g, x)`` returns ``(x + proj(A V), A)`` with ``A`` of shape (N, L_query, L_key).
    """

    def __init__(
        self,
        gate_channels: int,
        skip_channels: int,
        key_dim: int,
        scale: int = 2,
        kv_pool: int = 1,
        expansion: float = 6,
        dims: int = 2,
    ):
        super().__init__()
        if key_dim < 1:
            raise ValueError(f"key_dim must be positive, got {key_dim}")
        if scale not in (1, 2):
            raise ValueError(f"scale must be 1 or 2, got {scale}")
        self.key_dim = key_dim
        self.ir = InvertedResidual(gate_channels, gate_channels, expansion, dims=dims)
        if scale == 2:
            self.kv = conv_transpose_nd(dims, gate_channels, 2 * key_dim, 2, 2)
        else:
            self.kv = conv_nd(dims, gate_channels, 2 * key_dim, 1)
        self.pool = kv_pool_nd(dims, kv_pool, "avg")
        self.query = conv_nd(dims, skip_channels, key_dim, 1)
        self.proj = nn.Sequential(conv_nd(dims, key_dim, skip_channels, 1, bias=False),
                                  batchnorm_nd(dims, skip_channels))

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.kv(self.ir(g))
        if self.pool is not None:
            kv = self.pool(kv)
        k, v = torch.split(to_tokens(kv), self.key_dim, dim=2)
        attended, weights = dot_product_attention(to_tokens(self.query(x)), k, v)
        return x + self.proj(from_tokens(attended, x)), weights
