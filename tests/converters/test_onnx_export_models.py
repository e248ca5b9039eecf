"""Every registered model exports to ONNX (legacy exporter, opset 17) and onnxruntime matches torch.

2D models at 64x64 and 3D models at 32^3 (both valid sizes for every model; the 3D ones are the issue's
small test volume). Models above 10M parameters, and the 3D models beyond the smallest of each family, are
in the slow suite: their exports take tens of seconds and files of hundreds of MB. The attention blocks are
exported one by one too, so every skip-attention choice is covered in 2D and 3D.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgeseg.layers.gates import SKIP_ATTENTION_CHOICES, skip_attention
from edgeseg.models import create_model, get_model_cfg, list_models

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

_DEFAULT_3D = {"ultralightunet3d-t", "unetr-s"}
_SLOW_PARAMS = 10_000_000


def _export_and_compare(model: nn.Module, inputs: tuple[torch.Tensor, ...], path) -> float:
    model.eval()
    names = [f"in{i}" for i in range(len(inputs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17, input_names=names,
                          output_names=["out"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = dict(zip(names, inputs))  # an input the graph does not use (a gate's g for SE) is dropped
    got = session.run(None, {i.name: feed[i.name].numpy() for i in session.get_inputs()})[0]
    with torch.no_grad():
        ref = model(*inputs).numpy()
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max())


def _case(name: str):
    cfg = get_model_cfg(name)
    slow = (cfg.spatial_dims == 3 and name not in _DEFAULT_3D) or (
        cfg.spatial_dims == 2 and name in {"unet", "attention-unet"}
    )
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


@pytest.mark.parametrize("name", [_case(n) for n in list_models()])
def test_registered_model_exports_and_matches(name, tmp_path):
    cfg = get_model_cfg(name)
    if cfg.family == "unetr":
        pytest.importorskip("monai")
        pytest.importorskip("einops")
    torch.manual_seed(0)
    model = create_model(name)
    if sum(p.numel() for p in model.parameters()) > _SLOW_PARAMS and cfg.spatial_dims == 2:
        assert name in {"unet", "attention-unet"}, f"{name} is large: mark its export test slow"
    side = 64 if cfg.spatial_dims == 2 else 32
    x = torch.randn(1, cfg.in_channels, *([side] * cfg.spatial_dims))
    assert _export_and_compare(model, (x,), tmp_path / f"{name}.onnx") < 1e-4


class _Gate(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.block(g, x)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", [k for k in SKIP_ATTENTION_CHOICES if k != "none"])
def test_skip_attention_blocks_export_and_match(kind, dims, tmp_path):
    torch.manual_seed(0)
    block = _Gate(skip_attention(kind, 16, dims, kv_pool=2))
    for m in block.modules():  # non-trivial BN statistics, so a wrong export cannot hide behind identities
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.running_var, 0.5, 1.5)
    g, x = torch.randn(1, 16, *([8] * dims)), torch.randn(1, 16, *([8] * dims))
    assert _export_and_compare(block, (g, x), tmp_path / f"{kind}.onnx") < 1e-4
