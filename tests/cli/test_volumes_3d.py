"""Sliding-window inference for 3D artifacts: `evaluate --artifact` and `predict --artifact` of an exported 3D
model cover whole volumes with windows of its input size, and agree with the torch checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")
pytest.importorskip("monai")
pytest.importorskip("onnxruntime")

from edgeseg import runtimes  # noqa: E402
from edgeseg.cli import main as cli  # noqa: E402
from edgeseg.data.volumes import synthetic_volume  # noqa: E402

MODEL, PATCH, CLIP = "ultralightunet3d-t", 32, (-100.0, 240.0)
SHAPE = (40, 36, 44)  # (D, H, W): larger than a window on every axis, so the windows overlap


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from edgeseg.converters import VerifyOptions, convert_model

    import edgeseg
    from edgeseg.train.checkpoint import build_checkpoint, save_checkpoint
    from edgeseg.train.volume_loop import volume_preprocessing

    root = tmp_path_factory.mktemp("vol3d")
    from edgeseg.data.volumes import normalize_intensity

    torch.manual_seed(0)
    net = edgeseg.create_model(MODEL, num_classes=2, in_channels=1).eval()
    # random weights, with the output head set so that about half the voxels (the lesions among them) are
    # foreground: masks with both classes, and a Dice above 0, make every comparison below count
    patch = torch.from_numpy(normalize_intensity(synthetic_volume(9, PATCH)[0][None], CLIP, None))[None]
    with torch.no_grad():
        logits = net(patch)[0]
        net.out4.bias[1] += float(torch.median(logits[0] - logits[1]))
        net.out4.weight.copy_(net.out4.weight[[1, 0]])
        net.out4.bias.copy_(net.out4.bias[[1, 0]])
    ckpt = save_checkpoint(build_checkpoint(net, MODEL, {"num_classes": 2, "in_channels": 1},
                                            volume_preprocessing(PATCH, CLIP), {}, {}), root / "best.pt")
    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    for i in range(2):  # a paired folder (no dataset.json), in NIfTI's (X, Y, Z) order
        vol, lab = synthetic_volume(i, SHAPE)
        for sub, arr in (("imagesTr", vol), ("labelsTr", lab)):
            (root / "data" / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine),
                     str(root / "data" / sub / f"ct_{i}.nii.gz"))
    [res] = convert_model(MODEL, "onnx", weights=ckpt, out_dir=root / "exports",
                          verify=VerifyOptions(enabled=False))
    return {"root": root, "ckpt": ckpt, "onnx": res.artifact.path, "affine": affine}


def test_artifact_windows_reproduce_the_checkpoints_volume_logits(setup):
    from edgeseg.cli._inference import segment_volume
    from edgeseg.data.volumes import normalize_intensity, sliding_window_predict

    vol, _ = synthetic_volume(5, SHAPE)
    with runtimes.load(setup["onnx"], threads=1) as rt:
        assert rt.manifest.input.nchw_shape()[2:] == [PATCH] * 3
        labels, logits = segment_volume(rt, vol)
    net = runtimes.load(setup["ckpt"], runtime="torch", threads=1).model
    x = torch.from_numpy(normalize_intensity(vol[None], CLIP, None))[None]
    ref = sliding_window_predict(net, x, (PATCH,) * 3, overlap=0.25)[0].numpy()  # MONAI, as training validates
    assert logits.shape == ref.shape == (2, *SHAPE)
    assert np.abs(logits - ref).max() < 1e-4
    assert np.mean(labels == ref.argmax(0)) > 0.999 and 0.2 < labels.mean() < 0.8  # near-ties may flip


def test_evaluate_scores_a_3d_artifact_as_it_scores_the_checkpoint(setup, capsys):
    data = str(setup["root"] / "data")
    results = {}
    for key, src in (("artifact", ["--artifact", str(setup["onnx"])]), ("weights", ["--weights", str(setup["ckpt"])])):
        assert cli(["evaluate", *src, "--data", data, "--split", "all", "--json", "--threads", "1"]) == 0
        results[key] = json.loads(capsys.readouterr().out)
    a, w = results["artifact"], results["weights"]
    assert a["n"] == w["n"] == 2 and a["img_size"] == [PATCH] * 3 and a["weights"].startswith("artifact:")
    for k in ("dice", "iou", "recall", "precision"):
        assert a[k] == pytest.approx(w[k], abs=1e-3), k
    assert 0 < a["dice"] < 1


def test_predict_segments_nifti_volumes_with_a_3d_model(setup, capsys):
    from edgeseg.cli._inference import segment_volume
    from edgeseg.data.volumes import read_nifti

    images = setup["root"] / "data" / "imagesTr"
    out = setup["root"] / "pred"
    assert cli(["predict", "--artifact", str(setup["onnx"]), "--input", str(images), "--out", str(out),
                "--json", "--threads", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)["outputs"]
    assert [r["labels"].rsplit("/", 1)[-1] for r in rows] == ["ct_0_label.nii.gz", "ct_1_label.nii.gz"]
    written = nib.load(rows[0]["labels"])
    assert np.allclose(written.affine, setup["affine"]) and written.shape == SHAPE[::-1]
    got = np.asarray(written.dataobj).transpose(2, 1, 0)
    with runtimes.load(setup["ckpt"], runtime="torch", threads=1) as ref:
        want, _ = segment_volume(ref, read_nifti(images / "ct_0.nii.gz")[0])
    assert np.mean(got == want) > 0.999 and rows[0]["window"] == [PATCH] * 3
    # flips run inside the windows too; images given to a 3D model, and volumes to a 2D one, are refused
    assert cli(["predict", "--artifact", str(setup["onnx"]), "--input", str(images / "ct_1.nii.gz"), "--out",
                str(out / "tta"), "--tta", "hflip", "--threads", "1"]) == 0
    capsys.readouterr()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(setup["root"] / "frame.png")
    assert cli(["predict", "--artifact", str(setup["onnx"]), "--input", str(setup["root"] / "frame.png"), "--out",
                str(out / "x")]) == 2
    assert "is a 3D model: give NIfTI volumes" in capsys.readouterr().err
    assert cli(["predict", "--model", "ultralightunet-t", "--input", str(images), "--out", str(out / "y")]) == 2
    assert "is a 2D model" in capsys.readouterr().err
