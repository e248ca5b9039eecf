"""UNETR (Hatamizadeh et al., 2022) on MONAI, its attention-gated variants, and a small edge configuration.

- ``unetr``: MONAI's ``monai.networks.nets.UNETR`` (extra ``3d``): ViT encoder (12 layers, hidden 768, 12
  heads, 16^3 patches, MLP 3072) on 96^3 volumes, CNN decoder with skips from the transformer (the paper's
  z3, z6, z9, z12; MONAI takes ``hidden_states_out[3], [6], [9]``, i.e. the outputs of layers 4, 7 and 10,
  and the final normed output, and so does this class), feature size 16, instance norm. Its state_dict is
  MONAI's (MONAI checkpoints load).
- ``unetr-ag`` (v1 of "Attention-Gated UNETR", a course project): an additive attention gate on the enc2 skip,
  gated by dec2 (the decoder feature at 1/4 resolution, upsampled to the skip's 1/2): 1x1x1 convs, ReLU,
  1x1x1 conv, sigmoid, multiply.
- ``unetr-ag2`` (v2): gates on enc1 and enc2. Each skip is brought to its gate's scale (a stride-2 2^3 conv,
  Oktay's theta), the mask is upsampled back, and the skip is gated residually, ``skip * (1 + gamma * mask)``,
  with identity initialisation (gamma = 0; mask-conv bias 2.0). Gates have no normalisation, so that bias
  is what the sigmoid sees. The project used MONAI 0.8.0 and describes these steps in words only; the gate
  widths (skip channels / 2) are this implementation's.
- ``unetr-s``: the same network with a ViT-Tiny-sized encoder (hidden 192, 3 heads, MLP 768) of 8 layers
  (skips ``hidden_states_out[2], [4], [6]``) and feature size 8: 92.8M -> 5.2M parameters, 72.4 -> 14.4 GMACs at 96^3
  (one class).

Counts at 96^3, one class: 92,802,257 params (paper, UltraLightUNet Table 3: 92.78M) and 72.39 GMACs in
the module-hook convention; the paper's 82.6 G is reproduced (82.50 G) when each transposed conv is counted
as a conv over its output (out.numel x C_in x k^3, thop's way), 8x its true MACs at kernel 2 / stride 2.

Beyond MONAI's forward: any input whose sides are multiples of 16 is accepted; when the patch grid differs
from the one the position embeddings were built for (``img_size``), they are trilinearly resized, as timm
does for ViTs (at the built size the forward is MONAI's exactly; a test checks it). The skip layers are
derived from the depth, so fewer layers work.

MONAI is imported when a UNETR is built, never by ``import edgeseg.models``; without it the builders raise
MissingDependencyError naming the extra (``pip install 'edgeseg[3d]'``; MONAI's UNETR also needs einops).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.common.deps import require
from edgeseg.layers._nd import is_exporting
from edgeseg.layers.gates import AttentionGate
from edgeseg.models._input import check_input
from edgeseg.models._registry import ModelCfg, PaperFigures, register_model

GATES = ("none", "v1", "v2")


class _HideTransformers:
    """Import finder that makes ``transformers`` look absent.

    ``monai.networks.nets`` imports every network, and Transchex's optional imports pull in Hugging Face
    transformers (installed here as a dependency of litert-torch), which in turn loads torchao: ~10 s and
    several warnings on every start, for a module UNETR never uses. MONAI's ``optional_import`` turns the
    refusal into a lazy stub, so only Transchex (unused here) is affected.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "transformers" or name.startswith("transformers."):
            raise ModuleNotFoundError(f"{name} hidden while importing MONAI", name=name)
        return None


def _import_monai_unetr() -> type:
    import sys

    if "transformers" in sys.modules or "monai" in sys.modules:
        require("monai", "UNETR")
        from monai.networks.nets import UNETR

        return UNETR
    hider = _HideTransformers()
    sys.meta_path.insert(0, hider)
    try:
        require("monai", "UNETR")  # monai's own __init__ already imports monai.networks.nets
        from monai.networks.nets import UNETR
    finally:
        sys.meta_path.remove(hider)
    return UNETR


@functools.cache
def _unetr_class() -> type:
    """The edgeseg UNETR class, a subclass of MONAI's UNETR (built on first use: MONAI is optional)."""
    require("einops", "MONAI's UNETR")
    MonaiUNETR = _import_monai_unetr()

    class UNETR(MonaiUNETR):
        """MONAI's UNETR with optional attention gates, a configurable depth and any input multiple of 16."""

        def __init__(
            self,
            in_channels: int = 1,
            num_classes: int = 1,
            img_size: int | Sequence[int] = 96,
            feature_size: int = 16,
            hidden_size: int = 768,
            mlp_dim: int = 3072,
            num_heads: int = 12,
            num_layers: int = 12,
            gates: str = "none",
            norm_name: str = "instance",
            dropout_rate: float = 0.0,
        ):
            if gates not in GATES:
                raise ValueError(f"gates must be one of {', '.join(GATES)}, got {gates!r}")
            if not 4 <= num_layers <= 12:
                raise ValueError(f"num_layers must be 4..12 (MONAI builds 12 and skips use 1/4, 1/2, 3/4 of them), "
                                 f"got {num_layers}")
            size = (img_size,) * 3 if isinstance(img_size, int) else tuple(img_size)
            if len(size) != 3 or any(s < 16 or s % 16 for s in size):
                raise ValueError(f"img_size must be 3 positive multiples of 16, got {img_size!r}")
            super().__init__(
                in_channels, num_classes, size, feature_size=feature_size, hidden_size=hidden_size,
                mlp_dim=mlp_dim, num_heads=num_heads, proj_type="conv", norm_name=norm_name,
                conv_block=True, res_block=True, dropout_rate=dropout_rate, spatial_dims=3,
            )
            if num_layers < 12:
                self.vit.blocks = self.vit.blocks[:num_layers]
            self.num_layers = num_layers
            self.in_channels = in_channels
            self.num_classes = num_classes
            self.skip_layers = (num_layers // 4, num_layers // 2, 3 * num_layers // 4)
            f = feature_size
            self.gate1: nn.Module | None = None
            self.gate2: nn.Module | None = None
            if gates == "v1":  # dec2 (4f channels, 1/4) gates enc2 (2f, 1/2)
                self.gate2 = AttentionGate(4 * f, 2 * f, f, norm=False, dims=3)
            elif gates == "v2":  # ... and dec1 (2f, 1/2) gates enc1 (f, full)
                self.gate2 = AttentionGate(4 * f, 2 * f, f, skip_stride=2, residual=True, psi_bias=2.0,
                                           norm=False, dims=3)
                self.gate1 = AttentionGate(2 * f, f, max(f // 2, 1), skip_stride=2, residual=True,
                                           psi_bias=2.0, norm=False, dims=3)

        def check_input(self, x: torch.Tensor) -> None:
            """Raise ValueError for an input this network cannot take, saying how to fix it."""
            check_input(x, self.in_channels, 3, 16)

        def _tokens(self, x: torch.Tensor) -> torch.Tensor:
            emb = self.vit.patch_embedding
            tokens = emb.patch_embeddings(x)
            grid = tuple(tokens.shape[2:])
            pos = emb.position_embeddings
            if grid != tuple(self.feat_size):
                pos = pos.transpose(1, 2).reshape(1, self.hidden_size, *self.feat_size)
                pos = F.interpolate(pos, size=grid, mode="trilinear", align_corners=False).flatten(2).transpose(1, 2)
            return emb.dropout(tokens.flatten(2).transpose(1, 2) + pos)

        def forward(self, x_in: torch.Tensor) -> torch.Tensor:
            """Logits (N, num_classes, D, H, W)."""
            if not is_exporting():
                self.check_input(x_in)
            grid = [s // 16 for s in x_in.shape[2:]]

            def volume(t: torch.Tensor) -> torch.Tensor:  # (N, L, E) tokens -> (N, E, *grid)
                return t.transpose(1, 2).reshape(t.shape[0], self.hidden_size, *grid)

            x = self._tokens(x_in)
            states = []
            for block in self.vit.blocks:
                x = block(x)
                states.append(x)
            x = self.vit.norm(x)
            enc1 = self.encoder1(x_in)
            enc2 = self.encoder2(volume(states[self.skip_layers[0]]))
            enc3 = self.encoder3(volume(states[self.skip_layers[1]]))
            enc4 = self.encoder4(volume(states[self.skip_layers[2]]))
            dec3 = self.decoder5(volume(x), enc4)
            dec2 = self.decoder4(dec3, enc3)
            if self.gate2 is not None:
                enc2 = self.gate2(dec2, enc2)
            dec1 = self.decoder3(dec2, enc2)
            if self.gate1 is not None:
                enc1 = self.gate1(dec1, enc1)
            return self.out(self.decoder2(dec1, enc1))

    return UNETR


def build_unetr(**kwargs: Any) -> nn.Module:
    """Build the edgeseg UNETR (see the module docstring for the arguments).

    Raises:
        MissingDependencyError: MONAI (or einops) is not installed.
    """
    return _unetr_class()(**kwargs)


_PAPER = PaperFigures(params_m=92.78, flops_g=82.6, input_size=(96, 96, 96),
                      source="UltraLightUNet (Rahman & Marculescu), Tables 3 and 12 (UNETR row, 96^3)")
_OPTIONS = {"img_size": 96, "dropout_rate": 0.0}
_LICENSE = "architecture: UNETR paper; MONAI's implementation (Apache-2.0)"


def _cfg(name: str, description: str, paper: PaperFigures | None = None) -> ModelCfg:
    return ModelCfg(
        name=name, family="unetr", input_size=(96, 96, 96), in_channels=1, mean=(0.0,), std=(1.0,),
        divisible_by=16, paper=paper or PaperFigures(), description=description, license=_LICENSE,
        options=_OPTIONS,
    )


@register_model(_cfg("unetr", "UNETR: ViT-B encoder (12x768) + CNN decoder, MONAI", _PAPER))
def unetr(**kwargs) -> nn.Module:
    return build_unetr(**kwargs)


@register_model(_cfg("unetr-ag", "UNETR with an attention gate on the enc2 skip (Attention-Gated UNETR v1)"))
def unetr_ag(**kwargs) -> nn.Module:
    return build_unetr(gates="v1", **kwargs)


@register_model(_cfg("unetr-ag2", "UNETR with residual attention gates on enc1/enc2 (Attention-Gated UNETR v2)"))
def unetr_ag2(**kwargs) -> nn.Module:
    return build_unetr(gates="v2", **kwargs)


@register_model(_cfg("unetr-s", "UNETR edge size: ViT-Tiny encoder (8x192, 3 heads), feature size 8"))
def unetr_s(**kwargs) -> nn.Module:
    return build_unetr(hidden_size=192, mlp_dim=768, num_heads=3, num_layers=8, feature_size=8, **kwargs)
