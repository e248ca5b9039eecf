"""UltraLightUNet (2D; the 3D network is the same class with ``dims=3``, registered in ultralightunet3d.py):
"UltraLightUNet: Rethinking U-shaped Network with Multi-kernel Lightweight
Convolutions for Medical Image Segmentation" (Rahman & Marculescu); published again as MK-UNet (ICCV 2025
CVAMD workshop).

Layout (paper Fig. 2a, checked against the authors' MK-UNet release):

- encoder: five stages, each one MKIR block followed by a 2x max-pool (no stem); channels C1..C5.
- decoder: five stages, each channel attention (own per stage) -> spatial attention (one module shared by
  all stages) -> MKIR -> bilinear 2x upsampling -> ReLU, then the grouped-attention-gated skip is added
  (stages 1-4). Stage 5 restores full resolution; a 1x1 conv gives the logits.
- channel attention reduction ratios 16, 16, 16, 8, 4 from the bottleneck up.

Side heads: the release defines four 1x1 heads ``out1..out4`` but its forward pass returns only ``out4``;
``out1..out3`` are deep-supervision heads that never reach the output. They are kept (``aux_heads=True``,
the default) so the authors' checkpoints load with ``strict=True``; ``forward_aux`` returns their upsampled
maps for deep-supervision training. Their weights are tiny (C3 + C2 + C1 + 3 per class) and they add no
FLOPs to inference or to an exported graph. ``edgeseg.profile`` counts them in ``params`` (as the paper's
figures do: see the model docs) and reports ``params_inference`` without them.

Ablations and skip-attention variants (options of every registered size): ``skip_attention`` puts any block
of :data:`edgeseg.layers.gates.SKIP_ATTENTION_CHOICES` on the skips instead of the GAG (the paper's Table 8
compares Oktay's gate, ``"ag"``: 0.326M / 0.320G for the base size); ``decoder_attention=False`` drops the
CMFA (Table 4: MKIR + GAG, 0.310M / 0.311G). ``block="ir"`` (not an option: see the ``mobile-unet`` baseline)
swaps MKIR for the plain inverted residual.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.layers._nd import _check_dims, conv_nd, interp_mode, is_exporting
from edgeseg.layers.attention import ChannelAttention, SpatialAttention
from edgeseg.layers.gates import SKIP_ATTENTION_CHOICES
from edgeseg.layers.gates import skip_attention as skip_attention_block
from edgeseg.layers.inverted_residual import InvertedResidual
from edgeseg.layers.mkconv import MKIR
from edgeseg.models._input import check_input
from edgeseg.models._registry import ModelCfg, PaperFigures, register_model

_CA_RATIOS = (16, 16, 16, 8, 4)
_MAX_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
_BLOCKS = ("mkir", "ir")


class UltraLightUNet(nn.Module):
    """UltraLightUNet, 2D (``dims=2``) or 3D (``dims=3``: every operation in 3D, see UltraLightUNet3D).

    Args:
        channels: the five stage widths C1..C5.
        num_classes: output channels (1 = binary logits).
        in_channels: input channels; 1 is repeated to 3 (grayscale to RGB, as in the release), any other
            count goes straight into the first block.
        kernel_sizes: MKDC kernels (one kernel with ``block="ir"``).
        expansion: MKIR expansion factor.
        gag_kernel: grouped attention gate kernel.
        aux_heads: build the release's deep-supervision heads out1..out3.
        skip_attention: the block on the four skips, one of
            :data:`edgeseg.layers.gates.SKIP_ATTENTION_CHOICES` ("gag" is the paper's).
        decoder_attention: channel + spatial attention (CMFA) before every decoder block (the paper's MKIRA);
            False gives the ablation without it.
        block: "mkir" (the paper's), or "ir" for the plain inverted residual of the Mobile UNet ablation.
        dims: 2 or 3 spatial dimensions.
    """

    supports_input_sizes_divisible_by = 32

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 96, 160),
        num_classes: int = 1,
        in_channels: int = 3,
        kernel_sizes: Sequence[int] = (1, 3, 5),
        expansion: float = 2,
        gag_kernel: int = 3,
        aux_heads: bool = True,
        skip_attention: str = "gag",
        decoder_attention: bool = True,
        block: str = "mkir",
        dims: int = 2,
    ):
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"UltraLightUNet needs 5 stage widths, got {list(channels)}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1 (grayscale is repeated to RGB), got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {', '.join(_BLOCKS)}, got {block!r}")
        if block == "ir" and len(kernel_sizes) != 1:
            raise ValueError(f"block='ir' takes one depthwise kernel, got kernel_sizes={list(kernel_sizes)}")
        if skip_attention not in SKIP_ATTENTION_CHOICES:
            raise ValueError(
                f"unknown skip_attention {skip_attention!r}; choose one of {', '.join(SKIP_ATTENTION_CHOICES)}"
            )
        c = list(channels)
        self.channels = tuple(c)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.dims = _check_dims(dims)

        def stage(cin: int, cout: int) -> nn.Sequential:
            if block == "ir":
                return nn.Sequential(
                    InvertedResidual(cin, cout, expansion, kernel_sizes[0], dims=dims, project_shortcut=True)
                )
            return nn.Sequential(MKIR(cin, cout, kernel_sizes, expansion, dims=dims))

        enc_in = [3 if in_channels == 1 else in_channels, *c[:4]]
        for i in range(5):
            setattr(self, f"encoder{i + 1}", stage(enc_in[i], c[i]))
        for i, skip in enumerate((c[3], c[2], c[1], c[0])):
            # AG1 sits at 1/16 of the input, AG4 at 1/2: pooled keys (nonlocal, pla) land on a 1/32 grid
            gate = skip_attention_block(skip_attention, skip, dims, gag_kernel=gag_kernel, kv_pool=2 ** (i + 1))
            setattr(self, f"AG{i + 1}", gate)
        dec = [(c[4], c[3]), (c[3], c[2]), (c[2], c[1]), (c[1], c[0]), (c[0], c[0])]
        for i, (cin, cout) in enumerate(dec):
            setattr(self, f"decoder{i + 1}", stage(cin, cout))
        self.decoder_attention = decoder_attention
        if decoder_attention:
            for i, (cin, _) in enumerate(dec):
                setattr(self, f"CA{i + 1}", ChannelAttention(cin, _CA_RATIOS[i], dims))
            self.SA = SpatialAttention(7, dims)
        if aux_heads:
            self.out1 = conv_nd(dims, c[2], num_classes, 1)
            self.out2 = conv_nd(dims, c[1], num_classes, 1)
            self.out3 = conv_nd(dims, c[0], num_classes, 1)
        self.out4 = conv_nd(dims, c[0], num_classes, 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError for an input this network cannot take, saying how to fix it."""
        check_input(x, self.in_channels, self.dims, 32)

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not is_exporting():
            self.check_input(x)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, *([1] * self.dims))
        pool = _MAX_POOL[self.dims]
        skips = []
        out = x
        for i in range(1, 6):
            out = pool(getattr(self, f"encoder{i}")(out), 2, 2)
            skips.append(out)
        skips = skips[:4][::-1]  # t4, t3, t2, t1
        stage_outputs = []
        for i in range(1, 6):
            if self.decoder_attention:
                out = getattr(self, f"CA{i}")(out) * out
                out = self.SA(out) * out
            out = getattr(self, f"decoder{i}")(out)
            out = F.relu(F.interpolate(out, scale_factor=2.0, mode=interp_mode(self.dims), align_corners=False))
            if i <= 4:
                stage_outputs.append(out)
                out = out + getattr(self, f"AG{i}")(out, skips[i - 1])
        return out, stage_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, *S) for an (N, in_channels, *S) normalised batch."""
        out, _ = self._decode(x)
        return self.out4(out)

    def forward_aux(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[main, aux1, aux2, aux3] logits, all at input resolution, for deep supervision."""
        if not hasattr(self, "out1"):
            raise ValueError("this model was built with aux_heads=False; rebuild with aux_heads=True")
        out, stages = self._decode(x)
        size = x.shape[2:]
        mode = interp_mode(self.dims)
        aux = [
            F.interpolate(head(stages[k]), size=size, mode=mode, align_corners=False)
            for head, k in ((self.out1, 1), (self.out2, 2), (self.out3, 3))
        ]
        return [self.out4(out), *aux]


_SOURCE = "UltraLightUNet (Rahman & Marculescu), Table 9 (256x256)"
_LICENSE = "architecture: UltraLightUNet / MK-UNet paper; independent implementation (Apache-2.0)"
_OPTIONS = {"kernel_sizes": (1, 3, 5), "expansion": 2, "gag_kernel": 3, "aux_heads": True,
            "skip_attention": "gag", "decoder_attention": True}


def _cfg(name: str, params: float, flops: float, label: str) -> ModelCfg:
    return ModelCfg(
        name=name,
        family="ultralightunet",
        input_size=(256, 256),
        paper=PaperFigures(params_m=params, flops_g=flops, input_size=(256, 256), source=_SOURCE),
        description=f"UltraLightUNet{label}: multi-kernel inverted residuals, CMFA attention, GAG skips",
        license=_LICENSE,
        options=_OPTIONS,
    )


@register_model(_cfg("ultralightunet-t", 0.027, 0.062, "-T [4,8,16,24,32]"))
def ultralightunet_t(**kwargs) -> UltraLightUNet:
    return UltraLightUNet(channels=(4, 8, 16, 24, 32), **kwargs)


@register_model(_cfg("ultralightunet-s", 0.093, 0.125, "-S [8,16,32,48,80]"))
def ultralightunet_s(**kwargs) -> UltraLightUNet:
    return UltraLightUNet(channels=(8, 16, 32, 48, 80), **kwargs)


@register_model(_cfg("ultralightunet", 0.316, 0.314, " (base) [16,32,64,96,160]"))
def ultralightunet(**kwargs) -> UltraLightUNet:
    return UltraLightUNet(channels=(16, 32, 64, 96, 160), **kwargs)


@register_model(_cfg("ultralightunet-m", 1.15, 0.951, "-M [32,64,128,192,320]"))
def ultralightunet_m(**kwargs) -> UltraLightUNet:
    return UltraLightUNet(channels=(32, 64, 128, 192, 320), **kwargs)


@register_model(_cfg("ultralightunet-l", 3.76, 3.19, "-L [64,128,256,384,512]"))
def ultralightunet_l(**kwargs) -> UltraLightUNet:
    return UltraLightUNet(channels=(64, 128, 256, 384, 512), **kwargs)
