"""PAM-UNet: "PAM-UNet: Shifting Attention on Region of Interest in Medical Images" (Das, Jha et al.).

A mobile U-Net: MBConv (MobileNetV2 inverted residual: 1x1 expand x6, 3x3 depthwise, 1x1 project, BN,
ReLU6; stride 2 to downsample) encoder, a mirrored decoder that upsamples with transposed convs, and
Progressive Luong Attention (:class:`~edgeseg.layers.pla.ProgressiveLuongAttention`) on every skip, coarse to
fine. Default input 128x128 (paper, Sec. IV). Training adds the attention regulariser (paper eq. 6-8):
``logits, maps = model.forward_with_attention(x)`` and
``loss = bce(logits, y) + ATTENTION_REG_WEIGHT * attention_regularizer(maps)`` (both in
:mod:`edgeseg.layers.pla`).

Layout (the paper gives no widths or depths; these are this implementation's, see the notes):

- stem: 3x3 conv, stride 2, + BN + ReLU6 -> C0 at 1/2;
- encoder stages 1-4: MBConv stride 2 then MBConv stride 1 -> C1..C4 at 1/4 ... 1/32;
- decoder stages 3..0: ``up = ConvTranspose2x2(d_{j+1})``; ``s = PLA(d_{j+1}, e_j)`` (keys/values from the
  coarser decoder feature through an MBConv and a 2x2 transposed conv, average-pooled onto a grid of
  1/``kv_stride`` of the input; queries from the encoder feature e_j); ``d_j = MBConv(MBConv([s, up]))``;
- head: 2x2 stride-2 transposed conv to the classes at full resolution ("the final layer through a
  ConvTranspose generates the segmentation mask").

Cost: the paper reports 1.32 GFLOPs (Table I) and no parameter count. The authors' public code does not run
(its finest attention gets the 3-channel image as query for a 32-channel layer) and, repaired, multiplies
every position with every other at 128x128, 64x64, 32x32 and 16x16: ~20 GMACs in its attention products
alone. Here keys and values are average-pooled onto a grid of 1/16 of the input (8x8 at 128x128), so the
attention products cost ~16 MMACs; the widths (32, 64, 128, 192, 320), those of UltraLightUNet-M, put the
module-hook count at 1.316 G (8.64M params), next to the paper's 1.32 G.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgeseg.layers._nd import is_exporting
from edgeseg.layers.inverted_residual import InvertedResidual, conv_bn_act
from edgeseg.layers.pla import ProgressiveLuongAttention
from edgeseg.models._input import check_input
from edgeseg.models._registry import ModelCfg, PaperFigures, register_model


class PAMUNet(nn.Module):
    """PAM-UNet.

    Args:
        channels: widths C0 (stem) .. C4 (bottleneck).
        num_classes: output channels (1 = binary logits).
        in_channels: input channels.
        expansion: MBConv expansion factor (6 in the paper).
        key_dims: PLA key/value width per decoder stage (finest first); default C_j // 2.
        kv_stride: keys/values are pooled onto a grid of 1/kv_stride of the input (16, 8, 4 or 2).
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128, 192, 320),
        num_classes: int = 1,
        in_channels: int = 3,
        expansion: float = 6,
        key_dims: Sequence[int] | None = None,
        kv_stride: int = 16,
    ):
        super().__init__()
        c = list(channels)
        if len(c) != 5 or min(c) < 1:
            raise ValueError(f"PAMUNet needs 5 positive widths (stem, 4 stages), got {c}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if kv_stride not in (2, 4, 8, 16):
            raise ValueError(f"kv_stride must be 2, 4, 8 or 16, got {kv_stride}")
        dk = list(key_dims) if key_dims is not None else [max(ch // 2, 1) for ch in c[:4]]
        if len(dk) != 4:
            raise ValueError(f"key_dims needs one width per decoder stage (4), got {dk}")
        self.in_channels = in_channels
        self.num_classes = num_classes

        def mbconv(cin: int, cout: int, stride: int = 1) -> InvertedResidual:
            return InvertedResidual(cin, cout, expansion, 3, stride)

        self.stem = conv_bn_act(2, in_channels, c[0], 3, 2)
        self.encoders = nn.ModuleList(
            nn.Sequential(mbconv(c[i], c[i + 1], 2), mbconv(c[i + 1], c[i + 1])) for i in range(4)
        )
        # decoder stage j works at 1/2^(j+1) of the input; its keys are pooled down to 1/kv_stride
        stages = range(3, -1, -1)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c[j + 1], c[j], 2, 2) for j in stages)
        self.attention = nn.ModuleList(
            ProgressiveLuongAttention(
                c[j + 1], c[j], dk[j], scale=2, kv_pool=max(kv_stride // 2 ** (j + 1), 1), expansion=expansion
            )
            for j in stages
        )
        self.decoders = nn.ModuleList(nn.Sequential(mbconv(2 * c[j], c[j]), mbconv(c[j], c[j])) for j in stages)
        self.head = nn.ConvTranspose2d(c[0], num_classes, 2, 2)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError for an input this network cannot take, saying how to fix it."""
        check_input(x, self.in_channels, 2, 32)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (N, num_classes, H, W) and the four PLA weight maps, coarse to fine, each (N, L_q, L_kv)."""
        if not is_exporting():
            self.check_input(x)
        skips = [self.stem(x)]
        for enc in self.encoders:
            skips.append(enc(skips[-1]))
        out = skips[4]
        maps = []
        for up, att, dec, skip in zip(self.ups, self.attention, self.decoders, skips[3::-1]):
            attended, weights = att(out, skip)
            out = dec(torch.cat([attended, up(out)], dim=1))
            maps.append(weights)
        return self.head(out), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, H, W) for an (N, in_channels, H, W) normalised batch."""
        return self.forward_with_attention(x)[0]


@register_model(ModelCfg(
    name="pam-unet", family="pam-unet", input_size=(128, 128), divisible_by=32,
    paper=PaperFigures(flops_g=1.32, input_size=(128, 128), source="PAM-UNet (Das, Jha et al.), Table I"),
    description="PAM-UNet: MBConv U-Net with Progressive Luong Attention on the skips (pooled keys)",
    license="architecture: PAM-UNet paper; independent implementation (Apache-2.0)",
    options={"expansion": 6, "kv_stride": 16},
))
def pam_unet(**kwargs) -> PAMUNet:
    return PAMUNet(**kwargs)
