"""LiteRT backend: a channels-last .tflite (litert-torch) gives the torch reference's NCHW logits.

The default suite converts one tiny conv net (~6 s after a ~15 s import of litert-torch) to NHWC, which
exercises the backend and the layout round trip; the ultralightunet-t conversions (~30-60 s each on the
2-core machine) are marked slow.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from edgeseg.runtimes.manifest import TensorSpec, manifest_path

from edgeseg import runtimes
from tests.runtimes.test_backends import FP32_TOL, SIZE, reference_model, torch_logits, write_manifest

TINY = 16  # spatial size of the tiny net's artifact

pytest.importorskip("ai_edge_litert")


def _tiny_net():
    """Conv-ReLU-Conv with 2 output channels: small enough to convert in seconds."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    return net.eval()


def _convert(model, path: Path, channels_last: bool, size: int = SIZE) -> Path:
    litert_torch = pytest.importorskip("litert_torch")
    import torch

    x = torch.zeros(1, 3, size, size)
    if channels_last:
        model = litert_torch.to_channel_last_io(model, args=[0], outputs=[0])
        x = x.permute(0, 2, 3, 1).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        litert_torch.convert(model, (x,)).export(str(path))
    return path


@pytest.fixture(scope="module")
def ref():
    return _tiny_net()


@pytest.fixture(scope="module")
def nhwc_tflite(ref, tmp_path_factory) -> Path:
    path = _convert(ref, tmp_path_factory.mktemp("litert") / "t_nhwc.tflite", channels_last=True, size=TINY)
    write_manifest(path, "tflite", [TensorSpec("args_0", [1, TINY, TINY, 3], layout="nhwc")],
                   [TensorSpec("output_0", [1, TINY, TINY, 2], layout="nhwc")])
    return path


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(5).normal(size=(2, 3, TINY, TINY)).astype(np.float32)


def test_nhwc_tflite_round_trips_to_nchw_and_matches_torch(nhwc_tflite, ref, batch):
    with runtimes.load(nhwc_tflite, threads=1) as rt:
        assert rt.name == "litert" and rt.manifest.input.layout == "nhwc"
        out = rt.infer(batch)  # NCHW in, NCHW out; batch 2 on a batch-1 model runs sample by sample
        info = rt.info()
    assert info["interpreter"] in ("ai-edge-litert", "tflite-runtime") and info["xnnpack"] is True
    assert out.shape == (2, 2, TINY, TINY)
    assert np.abs(out - torch_logits(ref, batch)).max() < FP32_TOL


def test_builtin_kernels_agree_with_xnnpack(nhwc_tflite, ref, batch):
    with runtimes.load(nhwc_tflite, threads=1, xnnpack=False) as rt:
        assert rt.info()["xnnpack"] is False
        assert np.abs(rt.infer(batch) - torch_logits(ref, batch)).max() < FP32_TOL


def test_without_manifest_the_layout_is_read_from_the_model(nhwc_tflite, tmp_path, ref, batch):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(nhwc_tflite.read_bytes())
    assert not manifest_path(bare).exists()
    with pytest.raises(ValueError, match="no manifest beside it"):
        runtimes.load(bare)
    rt = runtimes.load(bare, preprocessing={"size": [TINY, TINY], "mean": [0.485, 0.456, 0.406],
                                            "std": [0.229, 0.224, 0.225]})
    assert rt.manifest.input.layout == "nhwc" and rt.manifest.input.shape == [1, TINY, TINY, 3]
    assert rt.manifest.preprocessing.size == [TINY, TINY] and rt.manifest.postprocessing.activation == "softmax"
    assert np.abs(rt.infer(batch) - torch_logits(ref, batch)).max() < FP32_TOL


def test_static_tflite_rejects_another_size_and_unknown_devices(nhwc_tflite):
    rt = runtimes.load(nhwc_tflite)
    with pytest.raises(ValueError, match=r"expected input shape \[1, 3, 16, 16\]"):
        rt.infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(runtimes.DeviceNotAvailableError, match="available: cpu"):
        runtimes.load(nhwc_tflite, device="tpu")


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_ultralightunet_tflite_matches_torch(channels_last, tmp_path):
    model = reference_model(seed=3)
    path = _convert(model, tmp_path / "t.tflite", channels_last=channels_last)
    x = np.random.default_rng(6).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    pre = {"size": [SIZE, SIZE], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    with runtimes.load(path, threads=1, preprocessing=pre) as rt:  # no manifest: the layout is read from the model
        assert rt.manifest.input.layout == ("nhwc" if channels_last else "nchw")
        assert np.abs(rt.infer(x) - torch_logits(model, x)).max() < FP32_TOL
