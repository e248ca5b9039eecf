"""Baselines: U-Net (Ronneberger et al.), Attention U-Net (Oktay et al.) and the Mobile UNet of the
UltraLightUNet ablation.

U-Net and Attention U-Net follow the layout that the UltraLightUNet paper's ACDC comparison counts (Table 11:
51.04 G for Attention U-Net and 50.19 G for U-Net at 224x224, i.e. the widely used PyTorch reimplementation
with padded convs and BatchNorm): five stages of two 3x3 conv + BN + ReLU (64 ... 1024 channels) with 2x2 max
pooling; each decoder stage upsamples (nearest 2x) and applies a 3x3 conv + BN + ReLU that halves the
channels, concatenates the skip (gated by an additive attention gate in Attention U-Net, inter channels =
C/2, gated by the upsampled decoder feature) and applies two 3x3 convs; a 1x1 conv gives the logits.
Their default input is the paper's 224x224 (any multiple of 16 works). ``unet`` accepts every
``skip_attention`` choice of :data:`edgeseg.layers.gates.SKIP_ATTENTION_CHOICES`; ``attention-unet`` is
``unet`` with ``skip_attention="ag"``.

Table 11 prints 35.53M parameters for U-Net. This layout has 34.53M (one digit apart) while its FLOPs match
the table to 0.05% and Attention U-Net's 34.88M / 51.04 G match too, so the U-Net params figure is taken to
be a misprint and only its FLOPs are asserted.

Mobile UNet (Tables 4 and 6: 0.271M, 0.230G at 256x256) is UltraLightUNet's topology with the plain
inverted residual block (kernel 3, expansion 2, a 1x1 projection on the shortcut when channels change)
instead of MKIR, no CMFA and plain additive skips. Its params match (270,881); its FLOPs come to 0.224 G,
2.5% under the paper's 0.230 G, for a reason not identified (the MKIR rows of the same tables match to 0.2%).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgeseg.layers._nd import is_exporting
from edgeseg.layers.gates import SKIP_ATTENTION_CHOICES
from edgeseg.layers.gates import skip_attention as skip_attention_block
from edgeseg.models._input import check_input
from edgeseg.models._registry import ModelCfg, PaperFigures, register_model
from edgeseg.models.ultralightunet import UltraLightUNet


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=True), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU."""
    return nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


class UNet(nn.Module):
    """U-Net with padded convs and BatchNorm, and an optional attention block on every skip.

    Args:
        channels: the five stage widths.
        num_classes: output channels (1 = binary logits).
        in_channels: input channels.
        skip_attention: one of :data:`edgeseg.layers.gates.SKIP_ATTENTION_CHOICES`.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        num_classes: int = 1,
        in_channels: int = 3,
        skip_attention: str = "none",
    ):
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"UNet needs 5 stage widths, got {list(channels)}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if skip_attention not in SKIP_ATTENTION_CHOICES:
            raise ValueError(
                f"unknown skip_attention {skip_attention!r}; choose one of {', '.join(SKIP_ATTENTION_CHOICES)}"
            )
        c = list(channels)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.pool = nn.MaxPool2d(2, 2)
        self.encoders = nn.ModuleList(double_conv(cin, cout) for cin, cout in zip([in_channels, *c[:4]], c))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2.0), *_conv_bn_relu(c[i + 1], c[i])) for i in range(3, -1, -1)
        )
        # skip i (from the deepest) sits at 1/8 ... 1/1 of the input: pooled keys land on a 1/16 grid
        self.gates = nn.ModuleList(
            skip_attention_block(skip_attention, c[i], kv_pool=2 ** (4 - i)) for i in range(3, -1, -1)
        )
        self.decoders = nn.ModuleList(double_conv(2 * c[i], c[i]) for i in range(3, -1, -1))
        self.head = nn.Conv2d(c[0], num_classes, 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError for an input this network cannot take, saying how to fix it."""
        check_input(x, self.in_channels, 2, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, H, W)."""
        if not is_exporting():
            self.check_input(x)
        skips = []
        out = x
        for i, enc in enumerate(self.encoders):
            out = enc(out if i == 0 else self.pool(out))
            skips.append(out)
        for up, gate, dec, skip in zip(self.ups, self.gates, self.decoders, skips[3::-1]):
            out = up(out)
            out = dec(torch.cat([gate(out, skip), out], dim=1))
        return self.head(out)


_ACDC = "UltraLightUNet (Rahman & Marculescu), Table 11 (ACDC, 224x224)"
_ABLATION = "UltraLightUNet (Rahman & Marculescu), Tables 4 and 6 (256x256)"


@register_model(ModelCfg(
    name="unet", family="unet", input_size=(224, 224), divisible_by=16,
    paper=PaperFigures(flops_g=50.19, input_size=(224, 224),
                       source=_ACDC + "; its 35.53M params is taken as a misprint of 34.53M"),
    description="U-Net (Ronneberger et al.), padded convs + BatchNorm, 64..1024 channels",
    license="architecture: U-Net paper; independent implementation (Apache-2.0)",
    options={"skip_attention": "none"},
))
def unet(**kwargs) -> UNet:
    return UNet(**kwargs)


@register_model(ModelCfg(
    name="attention-unet", family="unet", input_size=(224, 224), divisible_by=16,
    paper=PaperFigures(params_m=34.88, flops_g=51.04, input_size=(224, 224), source=_ACDC),
    description="Attention U-Net (Oktay et al.): U-Net with additive attention gates on the skips",
    license="architecture: Attention U-Net paper; independent implementation (Apache-2.0)",
))
def attention_unet(**kwargs) -> UNet:
    return UNet(skip_attention="ag", **kwargs)


@register_model(ModelCfg(
    name="mobile-unet", family="ultralightunet", input_size=(256, 256),
    paper=PaperFigures(params_m=0.271, flops_g=0.230, input_size=(256, 256), source=_ABLATION),
    description="Mobile UNet: UltraLightUNet topology with plain inverted residuals (k3), no attention",
    license="architecture: UltraLightUNet ablation; independent implementation (Apache-2.0)",
    options={"aux_heads": False, "expansion": 2},
))
def mobile_unet(aux_heads: bool = False, **kwargs) -> UltraLightUNet:
    return UltraLightUNet(
        channels=(16, 32, 64, 96, 160), kernel_sizes=(3,), block="ir", skip_attention="none",
        decoder_attention=False, aux_heads=aux_heads, **kwargs,
    )
