"""A 3D artifact describes itself (issue 15, case 9): converted at the checkpoint's patch size with its volume
pre-processing in the manifest, verified on phantoms with foreground, and pointed only at what can run it.

Before: a checkpoint trained on 32^3 patches with percentile clip + z-score converted at 96^3 with mean 0 / std 1
"stretch" in its manifest, was verified on random noise, and the hints named predict and bench, which refuse 3D.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgeseg.runtimes.manifest import Manifest, manifest_path  # noqa: E402
from edgeseg.runtimes.processing import preprocess_volume  # noqa: E402

from edgeseg import runtimes  # noqa: E402
from edgeseg.data.volumes import normalize_intensity, synthetic_volume  # noqa: E402

MODEL = "ultralightunet3d-t"
PATCH = 32


def _checkpoint(path, clip=None):
    import edgeseg
    from edgeseg.train.checkpoint import build_checkpoint, save_checkpoint
    from edgeseg.train.volume_loop import volume_preprocessing

    torch.manual_seed(0)
    net = edgeseg.create_model(MODEL, num_classes=2, in_channels=1)
    kwargs = {"num_classes": 2, "in_channels": 1}
    return save_checkpoint(build_checkpoint(net, MODEL, kwargs, volume_preprocessing(PATCH, clip), {}, {}), path)


def test_a_3d_checkpoint_converts_at_its_patch_size_with_its_volume_preprocessing(tmp_path, capsys):
    from edgeseg.cli import main

    ckpt = _checkpoint(tmp_path / "best.pt")
    out = tmp_path / "exports"
    rc = main(["convert", "--model", MODEL, "--weights", str(ckpt), "--target", "onnx", "--out", str(out),
               "--verify-size", "4", "--threads", "1"])
    stdout = capsys.readouterr().out
    assert rc == 0
    path = out / f"{MODEL}_fp32.onnx"
    m = Manifest.load(manifest_path(path))
    assert m.input.nchw_shape() == [1, 1, PATCH, PATCH, PATCH]  # the trained patch, not the model's 96^3
    pre = m.preprocessing
    assert (pre.size, pre.resize, pre.percentiles, pre.intensity_clip, pre.zscore) == \
        ([PATCH] * 3, "sliding-window", [0.5, 99.5], None, True)
    assert (pre.mean, pre.std, pre.color) == ([0.0], [1.0], "gray")  # nothing after the z-score
    # verified on phantoms with lesions in every patch, not on noise
    inputs = m.parity["inputs"]
    assert inputs["source"] == "synthetic-volumes" and inputs["count"] == 4 and inputs["foreground"] > 0.005
    assert m.parity["labels_foreground"] == pytest.approx(inputs["foreground"], abs=1e-4) and m.parity["passed"]
    # the hints name only commands that take this artifact: each one runs on it
    hints = stdout[stdout.index("next:"):]
    assert "runtimes.load" in hints and "preprocess_volume" in hints
    assert not any(f"edgeseg {c}" in hints for c in ("predict", "bench", "demo"))
    commands = [line.split("edgeseg ", 1)[1].split("  ")[0].split() for line in hints.splitlines()
                if "edgeseg " in line and "runtimes" not in line]
    assert commands
    for argv in commands:
        argv = [a.replace("MSD_FOLDER", "synthetic:1") for a in argv]
        assert main([*argv, "--threads", "1"]) == 0, argv
    # the device side normalises a volume as training did, and the artifact runs on a patch of it
    vol, _ = synthetic_volume(7, 40)
    x = preprocess_volume(vol, pre)
    np.testing.assert_allclose(x[0], normalize_intensity(vol[None], None, (0.5, 99.5)), atol=1e-5)
    with runtimes.load(path, threads=1) as rt:
        y = rt.infer(np.ascontiguousarray(x[:, :, :PATCH, :PATCH, :PATCH]))
    assert y.shape == (1, 2, PATCH, PATCH, PATCH) and np.isfinite(y).all()
    # the torch reference reads the same description from the checkpoint
    with runtimes.load(ckpt, runtime="torch", threads=1) as ref:
        assert ref.manifest.preprocessing == pre


def test_a_fixed_intensity_window_is_what_the_manifest_records(tmp_path):
    from edgeseg.converters.calibration import volume_phantoms
    from edgeseg.converters.provenance import preprocessing_for

    from edgeseg.models import get_model_cfg
    from edgeseg.weights import read_checkpoint

    ckpt = read_checkpoint(_checkpoint(tmp_path / "ct.pt", clip=(-100.0, 240.0)))
    pre = preprocessing_for(get_model_cfg(MODEL), (PATCH,) * 3, ckpt, 1)
    assert (pre.intensity_clip, pre.percentiles, pre.zscore) == ([-100.0, 240.0], None, True)
    vol, _ = synthetic_volume(3, 40)
    np.testing.assert_allclose(preprocess_volume(vol, pre)[0], normalize_intensity(vol[None], (-100, 240), None),
                               atol=1e-5)
    ph = volume_phantoms(3, pre, 1)
    assert ph.images.shape == (3, 1, PATCH, PATCH, PATCH) and ph.labels.shape == (3, PATCH, PATCH, PATCH)
    assert (ph.labels.reshape(3, -1) > 0).any(axis=1).all()  # a lesion in every verification patch
    with pytest.raises(ValueError, match="1 channel"):
        preprocess_volume(np.zeros((2, 8, 8, 8), np.float32), pre)
