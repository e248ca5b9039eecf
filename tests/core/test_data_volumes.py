"""NIfTI volumes in the Medical Segmentation Decathlon layout, normalisation, patches, sliding windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from edgeseg.data.volumes import (  # noqa: E402
    MSDVolumes,
    normalize_intensity,
    read_nifti,
    sample_patches,
    sliding_window_predict,
)


def _msd(tmp_path, n=5, shape=(24, 20, 16)):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    training = []
    for i in range(n):
        xyz = shape  # NIfTI axis order (X, Y, Z)
        img = rng.normal(100, 20, xyz).astype(np.float32)
        lab = np.zeros(xyz, np.uint8)
        lab[5:9, 4:8, 2:6] = 1
        img[lab == 1] += 300
        aff = np.diag([0.8, 0.8, 2.5, 1.0])
        nib.save(nib.Nifti1Image(img, aff), tmp_path / "imagesTr" / f"case_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(lab, aff), tmp_path / "labelsTr" / f"case_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    meta = {"name": "toy", "labels": {"0": "background", "1": "organ"}, "modality": {"0": "CT"},
            "training": training}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path


def test_msd_layout_axes_spacing_and_split(tmp_path):
    root = _msd(tmp_path)
    arr, spacing = read_nifti(root / "labelsTr" / "case_000.nii.gz")
    assert arr.shape == (16, 20, 24) and spacing == pytest.approx((2.5, 0.8, 0.8))
    assert arr[2:6, 4:8, 5:9].all() and arr.sum() == 64
    tr, va = MSDVolumes(root, "train"), MSDVolumes(root, "val")
    assert len(tr) == 4 and len(va) == 1 and not set(tr.ids) & set(va.ids) and tr.num_classes == 2
    image, label, sp = tr[0]
    assert image.shape == (1, 16, 20, 24) and image.dtype == np.float32 and label.sum() == 64
    assert abs(float(image.mean())) < 1e-4 and abs(float(image.std()) - 1) < 1e-3  # z-scored


def test_msd_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .*dataset.json"):
        MSDVolumes(tmp_path)
    (tmp_path / "dataset.json").write_text("{}")
    with pytest.raises(ValueError, match="'training' list"):
        MSDVolumes(tmp_path)
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.nii\.gz: unreadable NIfTI"):
        read_nifti(tmp_path / "bad.nii.gz")


def test_ct_window_clipping_and_minmax():
    v = np.array([[[-1000.0, 0.0, 100.0, 3000.0]]])
    out = normalize_intensity(v, clip=(-100, 240), zscore=False)
    assert out.ravel().tolist() == pytest.approx([0.0, 100 / 340, 200 / 340, 1.0])


def test_patches_respect_foreground_ratio_and_pad():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:4, 2:4, 2:4] = 1
    img = np.random.default_rng(1).normal(size=(1, 20, 20, 20)).astype(np.float32)
    patches = sample_patches(img, lab, (8, 8, 8), 40, fg_ratio=0.5, rng=np.random.default_rng(3))
    assert all(p.shape == (1, 8, 8, 8) and q.shape == (8, 8, 8) for p, q in patches)
    with_fg = sum(q.any() for _, q in patches)
    assert 20 <= with_fg < 40  # all centred patches hold foreground; random ones rarely do
    small = sample_patches(img[:, :5], lab[:5], (8, 8, 8), 2)
    assert small[0][0].shape == (1, 8, 8, 8)


def test_sliding_window_reproduces_an_identity_model():
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    x = torch.randn(1, 1, 19, 23, 17)
    out = sliding_window_predict(lambda t: t * 2.0, x, roi_size=(8, 8, 8), overlap=0.5)
    assert out.shape == x.shape and torch.allclose(out, x * 2.0, atol=1e-5)
