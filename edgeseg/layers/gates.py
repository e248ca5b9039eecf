"""Skip-connection attention: Oktay's additive attention gate, and one factory over the whole library.

:func:`skip_attention` builds the block a U-shaped network puts on a skip connection, by name, so the survey's
mechanisms can be compared on one backbone (``create_model("ultralightunet", skip_attention="ag")``). Every
choice is called as ``block(g, x)``: ``g`` the decoder feature at the skip's resolution, ``x`` the skip, and
returns the attended skip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.layers._nd import batchnorm_nd, conv_nd, interp_mode
from edgeseg.layers.attention import CMFA, GroupedAttentionGate
from edgeseg.layers.pla import ProgressiveLuongAttention
from edgeseg.layers.recalibration import ECA, CoordinateAttention, SqueezeExcitation
from edgeseg.layers.self_attention import NonLocalBlock


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., Attention U-Net), in 2D or 3D.

    ``psi = sigmoid(conv1x1(ReLU(W_g(g) + W_x(x))))``; the output is ``x * psi``, or ``x * (1 + gamma * psi)``
    with ``residual=True`` (gamma a learned scalar starting at 0, so the gate starts as the identity).

    Args:
        gate_channels: channels of the gating signal ``g``.
        skip_channels: channels of the skip ``x``.
        inter_channels: width of the intermediate map (default ``skip_channels // 2``).
        skip_stride: 1: ``g`` is resized to ``x``'s size when they differ (bilinear/trilinear). s > 1: ``x``
            is brought down to ``g``'s scale by an s x s stride-s conv (Oktay's theta) and the mask is
            upsampled back to ``x``'s size.
        residual: residual gating ``x * (1 + gamma * psi)``.
        psi_bias: initial bias of the mask conv (e.g. 2.0 so that the gate starts mostly open).
        norm: BatchNorm after W_g, W_x and the mask conv (as in the common Attention U-Net code). Without it
            ``psi_bias`` is what the sigmoid sees at initialisation.
        dims: 2 or 3 spatial dimensions.
    """

    def __init__(
        self,
        gate_channels: int,
        skip_channels: int,
        inter_channels: int | None = None,
        skip_stride: int = 1,
        residual: bool = False,
        psi_bias: float | None = None,
        norm: bool = True,
        dims: int = 2,
    ):
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(skip_channels // 2, 1)
        if min(gate_channels, skip_channels, inter) < 1:
            raise ValueError(f"channels must be positive, got g={gate_channels}, x={skip_channels}, inter={inter}")
        if skip_stride < 1:
            raise ValueError(f"skip_stride must be >= 1, got {skip_stride}")
        self.dims = dims
        self.skip_stride = skip_stride

        def branch(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
            layers = [conv_nd(dims, cin, cout, k, stride, 0, bias=True)]
            return nn.Sequential(*layers, batchnorm_nd(dims, cout)) if norm else nn.Sequential(*layers)

        self.W_g = branch(gate_channels, inter)
        self.W_x = branch(skip_channels, inter, skip_stride, skip_stride)
        self.psi = nn.Sequential(*branch(inter, 1), nn.Sigmoid())
        if psi_bias is not None:
            nn.init.constant_(self.psi[0].bias, psi_bias)
        self.activation = nn.ReLU(inplace=True)
        self.gamma = nn.Parameter(torch.zeros(1)) if residual else None

    def mask(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The attention coefficients psi at ``x``'s resolution, (N, 1, *x.shape[2:])."""
        theta = self.W_x(x)
        phi = self.W_g(g)
        if phi.shape[2:] != theta.shape[2:]:
            phi = F.interpolate(phi, size=theta.shape[2:], mode=interp_mode(self.dims), align_corners=False)
        psi = self.psi(self.activation(theta + phi))
        if psi.shape[2:] != x.shape[2:]:
            psi = F.interpolate(psi, size=x.shape[2:], mode=interp_mode(self.dims), align_corners=False)
        return psi

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        psi = self.mask(g, x)
        if self.gamma is None:
            return x * psi
        return x * (1 + self.gamma * psi)


class SkipOnly(nn.Module):
    """Adapter: a single-input block (SE, CBAM, non-local, ...) applied to the skip; ``g`` is ignored."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class PlainSkip(nn.Module):
    """No attention: the skip passes unchanged."""

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x


class PLASkip(nn.Module):
    """PLA on a same-resolution skip (scale 1): returns only the attended skip."""

    def __init__(self, channels: int, kv_pool: int, dims: int):
        super().__init__()
        self.pla = ProgressiveLuongAttention(
            channels, channels, max(channels // 2, 1), scale=1, kv_pool=kv_pool, expansion=2, dims=dims
        )

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.pla(g, x)[0]


SKIP_ATTENTION_CHOICES: dict[str, str] = {
    "none": "plain skip (no attention)",
    "gag": "grouped attention gate (UltraLightUNet), gated by the decoder feature",
    "ag": "additive attention gate (Oktay et al., Attention U-Net), gated by the decoder feature",
    "se": "squeeze-and-excitation on the skip",
    "eca": "efficient channel attention on the skip",
    "cbam": "CBAM channel + spatial attention on the skip (= CMFA)",
    "coord": "coordinate attention on the skip",
    "nonlocal": "non-local self-attention on the skip (keys/values pooled by kv_pool)",
    "pla": "Luong attention: skip queries, keys/values from the decoder feature (pooled by kv_pool)",
}


def skip_attention(
    kind: str, channels: int, dims: int = 2, *, gag_kernel: int = 3, kv_pool: int = 1
) -> nn.Module:
    """Build a skip-attention block ``block(g, x) -> attended x`` for a skip and decoder feature of equal width.

    Args:
        kind: one of :data:`SKIP_ATTENTION_CHOICES`.
        channels: channels of both the skip and the gating decoder feature.
        dims: 2 or 3 spatial dimensions.
        gag_kernel: kernel of the grouped attention gate (``"gag"``).
        kv_pool: key/value pooling factor of ``"nonlocal"`` and ``"pla"`` (choose it so that the pooled key
            grid is small at the skip's resolution).

    Raises:
        ValueError: unknown ``kind`` (with the valid choices).
    """
    c, half = channels, max(channels // 2, 1)
    builders = {
        "none": lambda: PlainSkip(),
        "gag": lambda: GroupedAttentionGate(c, c, half, gag_kernel, groups=half, dims=dims),
        "ag": lambda: AttentionGate(c, c, half, dims=dims),
        "se": lambda: SkipOnly(SqueezeExcitation(c, 16, dims)),
        "eca": lambda: SkipOnly(ECA(c, dims=dims)),
        "cbam": lambda: SkipOnly(CMFA(c, 16, 7, dims)),
        "coord": lambda: SkipOnly(CoordinateAttention(c, 32, dims)),
        "nonlocal": lambda: SkipOnly(NonLocalBlock(c, half, kv_pool, dims)),
        "pla": lambda: PLASkip(c, kv_pool, dims),
    }
    if kind not in builders:
        raise ValueError(f"unknown skip_attention {kind!r}; choose one of {', '.join(SKIP_ATTENTION_CHOICES)}")
    return builders[kind]()
