"""Parameter and FLOP counts in the convention of the papers this project implements.

Convention (that of ptflops' module hooks, which the UltraLightUNet paper used; "FLOPs" there are
multiply-accumulates):

- Conv / ConvTranspose / Linear: one MAC per weight use, plus one per output element for the bias;
- BatchNorm: 2 x numel of the input (1 x when not affine), LayerNorm/GroupNorm/InstanceNorm likewise;
- ReLU, ReLU6, Sigmoid, GELU, SiLU, LeakyReLU, PReLU, ELU, Hardswish: numel of the output;
- pooling modules (MaxPool, AvgPool, their Adaptive forms, and edgeseg's GlobalAvgPool/GlobalMaxPool):
  numel of the input; nn.Upsample: numel of the output;
- nn.MultiheadAttention: its projections and the two attention matmuls.
Functional calls (``F.max_pool2d``, ``F.interpolate``, ``torch.matmul``), elementwise adds and multiplies and
reshapes are not counted, as in ptflops. ``flops_torch`` gives torch.utils.flop_counter's figure for the same
input (2 x MACs of matmuls and convolutions only) as a cross-check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod
from typing import Any

import torch
from torch import nn

from edgeseg.layers.pooling import GlobalAvgPool, GlobalMaxPool

_ACTS = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.Hardswish, nn.Tanh)
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, GlobalAvgPool, GlobalMaxPool,
)  # fmt: skip
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
          nn.InstanceNorm2d, nn.InstanceNorm3d)  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """Counts for one model at one input size.

    Attributes:
        params: trainable + frozen parameters of the module (all of them, as the papers count).
        params_inference: parameters of the modules the forward pass actually runs.
        macs: multiply-accumulates in the convention above ("FLOPs" in the papers).
        flops_torch: torch.utils.flop_counter's count (2 x conv/matmul MACs), for cross-checking.
        input_size: the (N, C, *spatial) input the counts refer to.
    """

    params: int
    params_inference: int
    macs: int
    flops_torch: int
    input_size: tuple[int, ...]

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        """MACs in G: the figure the papers call GFLOPs."""
        return self.macs / 1e9

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params_m"] = round(self.params_m, 6)
        d["gflops"] = round(self.gflops, 6)
        return d


def _conv_macs(m: nn.Module, out: torch.Tensor) -> int:
    w = m.weight
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        # every input element is multiplied with out_channels/groups * k^d weights
        return 0  # handled in the hook with the input
    per_out = w.shape[1] * prod(w.shape[2:])  # in_channels/groups * kernel volume
    macs = out.numel() * per_out
    if m.bias is not None:
        macs += out.numel()
    return macs


def _module_macs(m: nn.Module, inp: tuple, out: Any) -> int:
    x = inp[0] if inp else None
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        w = m.weight  # (in, out/groups, *k)
        macs = x.numel() * w.shape[1] * prod(w.shape[2:])
        if m.bias is not None:
            macs += out.numel()
        return macs
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return _conv_macs(m, out)
    if isinstance(m, nn.Linear):
        macs = out.numel() * m.in_features
        return macs + (out.numel() if m.bias is not None else 0)
    if isinstance(m, _NORMS):
        affine = getattr(m, "affine", None)
        if affine is None:
            affine = getattr(m, "elementwise_affine", True)
        return x.numel() * (2 if affine else 1)
    if isinstance(m, _ACTS):
        return out.numel()
    if isinstance(m, _POOLS):
        return x.numel()
    if isinstance(m, nn.Upsample):
        return out.numel()
    if isinstance(m, nn.MultiheadAttention):
        q = x  # (L, N, E) or (N, L, E)
        e = m.embed_dim
        tokens = q.numel() // e
        seq = q.shape[1] if m.batch_first else q.shape[0]
        proj = 4 * tokens * e * e
        attn = 2 * tokens * seq * e
        return proj + attn
    return 0


def _resolve(model_or_name: nn.Module | str, kwargs: dict[str, Any]) -> nn.Module:
    if isinstance(model_or_name, str):
        from edgeseg.models import create_model

        # Built on the meta device: shapes propagate, nothing is allocated or computed, so even a 93M-parameter
        # 3D transformer profiles in well under a second.
        with torch.device("meta"):
            return create_model(model_or_name, **kwargs)
    return model_or_name


def _input_shape(model: nn.Module, input_size: int | tuple[int, ...] | None, batch: int) -> tuple[int, ...]:
    cfg = getattr(model, "model_cfg", None)
    in_ch = getattr(model, "in_channels", None) or (cfg.in_channels if cfg else 3)
    if input_size is None:
        if cfg is None:
            raise ValueError("input_size is required for a model that is not from the registry")
        spatial = tuple(cfg.input_size)
    elif isinstance(input_size, int):
        dims = cfg.spatial_dims if cfg else 2
        spatial = (input_size,) * dims
    else:
        spatial = tuple(input_size)
    return (batch, in_ch, *spatial)


@torch.no_grad()
def profile(
    model_or_name: nn.Module | str,
    input_size: int | tuple[int, ...] | None = None,
    *,
    batch: int = 1,
    **model_kwargs: Any,
) -> Profile:
    """Count parameters and FLOPs of a model at an input size.

    Args:
        model_or_name: a module or a registered model name.
        input_size: spatial size: an int (square / cubic) or a tuple; default the model's config.
        batch: batch size of the probe input (counts scale linearly with it).
        **model_kwargs: options for ``create_model`` when a name is given.

    Examples:
        >>> p = profile("ultralightunet-s", 256)
        >>> round(p.params_m, 3), round(p.gflops, 3)
    """
    model = _resolve(model_or_name, model_kwargs)
    shape = _input_shape(model, input_size, batch)
    was_training = model.training
    model.eval()
    total = [0]
    ran: set[int] = set()

    def hook(m: nn.Module, inp: tuple, out: Any) -> None:
        ran.add(id(m))
        total[0] += _module_macs(m, inp, out)

    from torch.utils.flop_counter import FlopCounterMode

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    first = next(model.parameters(), None)
    x = torch.zeros(shape, device=first.device if first is not None else "cpu")
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    params = sum(p.numel() for p in model.parameters())
    used = sum(p.numel() for m in model.modules() if id(m) in ran for p in m.parameters(recurse=False))
    return Profile(
        params=params,
        params_inference=used,
        macs=int(total[0]),
        flops_torch=int(counter.get_total_flops()),
        input_size=shape,
    )


def _kind(m: nn.Module) -> str:
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        if m.groups > 1 and m.groups == m.in_channels:
            return "depthwise conv"
        return "pointwise conv" if all(k == 1 for k in m.kernel_size) else "conv"
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return "transposed conv"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, _NORMS):
        return "norm"
    if isinstance(m, _ACTS):
        return "activation"
    if isinstance(m, _POOLS):
        return "pool"
    if isinstance(m, nn.Upsample):
        return "upsample"
    return type(m).__name__.lower()


@torch.no_grad()
def layer_costs(
    model_or_name: nn.Module | str,
    input_size: int | tuple[int, ...] | None = None,
    *,
    batch: int = 1,
    **model_kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Per counted module (the convention above): its kind, MACs, and the tensor sizes a roofline needs.

    Returns:
        ``{module path: {"kind", "macs", "in_elems", "out_elems", "params", "calls"}}`` in forward order, for
        every module :func:`profile` counts MACs for ("pointwise conv", "depthwise conv", "conv", "norm",
        ...). A module the forward pass calls more than once (a shared attention block) sums its calls.
        Bytes follow from the element size of the precision an artifact runs at.
    """
    model = _resolve(model_or_name, model_kwargs)
    shape = _input_shape(model, input_size, batch)
    was_training = model.training
    model.eval()
    names = {id(m): n for n, m in model.named_modules()}
    costs: dict[str, dict[str, Any]] = {}

    def hook(m: nn.Module, inp: tuple, out: Any) -> None:
        macs = _module_macs(m, inp, out)
        if not macs or not isinstance(out, torch.Tensor):
            return
        x = inp[0] if inp and isinstance(inp[0], torch.Tensor) else None
        c = costs.setdefault(names.get(id(m), ""), {"kind": _kind(m), "macs": 0, "in_elems": 0, "out_elems": 0,
                                                   "params": sum(p.numel() for p in m.parameters(recurse=False)),
                                                   "calls": 0})
        c["calls"] += 1
        c["macs"] += int(macs)
        c["in_elems"] += 0 if x is None else x.numel()
        c["out_elems"] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    first = next(model.parameters(), None)
    try:
        model(torch.zeros(shape, device=first.device if first is not None else "cpu"))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return costs
