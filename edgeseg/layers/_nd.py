"""Dimension-generic constructors, so one block definition serves 2D and 3D networks."""

from __future__ import annotations

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    return dims


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv2d`` or ``nn.Conv3d`` with the given arguments."""
    return _CONV[_check_dims(dims)](*args, **kwargs)


def conv_transpose_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` with the given arguments."""
    return _CONVT[_check_dims(dims)](*args, **kwargs)


def batchnorm_nd(dims: int, num_features: int) -> nn.Module:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return _BN[_check_dims(dims)](num_features)


def spatial_axes(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes of an N, C, *spatial tensor: (2, 3) for 2D, (2, 3, 4) for 3D."""
    return tuple(range(2, x.dim()))


def interp_mode(dims: int) -> str:
    """The linear interpolation mode for ``dims`` spatial dimensions."""
    return {2: "bilinear", 3: "trilinear"}[_check_dims(dims)]


def is_exporting() -> bool:
    """True while torch traces, compiles or exports the model (shape checks must then stay silent)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None:
        for probe in ("is_exporting", "is_compiling", "is_dynamo_compiling"):
            fn = getattr(compiler, probe, None)
            if fn is not None and fn():
                return True
    return False
