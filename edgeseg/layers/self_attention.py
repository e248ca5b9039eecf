"""Dot-product attention over feature maps: the shared kernel, and the non-local (self-attention) block.

Full-resolution self-attention costs (H*W)^2 per image, which no point-of-care device affords. Every block
here can pool its keys and values by a fixed factor (``kv_pool``) first, the survey's "point-to-pooled-
feature" reduction (Wang et al. already sub-sample the keys of the non-local block by a 2x max pool); the
factor is fixed at construction, so exported graphs have static shapes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from edgeseg.layers._nd import _check_dims, batchnorm_nd, conv_nd

_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}


def kv_pool_nd(dims: int, factor: int, kind: str = "avg") -> nn.Module | None:
    """A ``factor``-strided max or average pool for keys/values, or None for factor 1."""
    if factor < 1:
        raise ValueError(f"kv_pool must be >= 1, got {factor}")
    if factor == 1:
        return None
    table = {"avg": _AVGPOOL, "max": _MAXPOOL}[kind]
    return table[_check_dims(dims)](factor, factor)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) -> (N, prod(S), C)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, L, C) -> (N, C, *S) with the spatial shape of ``like`` (L = prod(S))."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *like.shape[2:])


_BROADCAST_PRODUCTS = False


@contextlib.contextmanager
def tflite_safe_attention() -> Iterator[None]:
    """Trace attention products as broadcast multiply + sum instead of matmul, inside this context.

    litert-torch 0.10 lowers ``matmul(q, k^T)`` to a FULLY_CONNECTED that loses the token transpose, which
    LiteRT then refuses ("fully_connected ... failed to prepare"). The broadcast form is mathematically the
    same and converts exactly, at the cost of an (N, Lq, Lk, d) intermediate (small with pooled keys), so
    it is used only while a TFLite converter traces the model.
    """
    global _BROADCAST_PRODUCTS
    previous, _BROADCAST_PRODUCTS = _BROADCAST_PRODUCTS, True
    try:
        yield
    finally:
        _BROADCAST_PRODUCTS = previous


def dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Luong / scaled dot-product attention with the weights returned.

    Args:
        q: queries (N, Lq, d).
        k: keys (N, Lk, d).
        v: values (N, Lk, dv).

    Returns:
        (attended (N, Lq, dv), weights (N, Lq, Lk)), the weights a softmax over the keys of Q K^T / sqrt(d).
    """
    if _BROADCAST_PRODUCTS:
        scores = (q[:, :, None, :] * k[:, None, :, :]).sum(-1)
        weights = torch.softmax(scores / math.sqrt(q.shape[-1]), dim=-1)
        return (weights[..., None] * v[:, None, :, :]).sum(2), weights
    weights = torch.softmax(torch.matmul(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1]), dim=-1)
    return torch.matmul(weights, v), weights


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., 2018): x + W(softmax(theta(x) phi(x)^T) g(x)).

    theta, phi, g are 1x1 convs to ``inter`` channels; phi and g are max-pooled by ``kv_pool``; W is a 1x1
    conv + BN whose BN scale starts at zero, so the block starts as the identity.

    Args:
        channels: input = output channels.
        inter_channels: embedding width (default channels // 2).
        kv_pool: pooling factor of the keys/values (2 in the paper).
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(self, channels: int, inter_channels: int | None = None, kv_pool: int = 2, dims: int = 2):
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(channels // 2, 1)
        if channels < 1 or inter < 1:
            raise ValueError(f"channels must be positive, got {channels} (inter {inter})")
        self.theta = conv_nd(dims, channels, inter, 1)
        self.phi = conv_nd(dims, channels, inter, 1)
        self.g = conv_nd(dims, channels, inter, 1)
        self.pool = kv_pool_nd(dims, kv_pool, "max")
        self.W = nn.Sequential(conv_nd(dims, inter, channels, 1), batchnorm_nd(dims, channels))
        nn.init.zeros_(self.W[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, v = self.phi(x), self.g(x)
        if self.pool is not None:
            k, v = self.pool(k), self.pool(v)
        out, _ = dot_product_attention(to_tokens(self.theta(x)), to_tokens(k), to_tokens(v))
        return x + self.W(from_tokens(out, x))
