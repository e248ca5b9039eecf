"""NIfTI image/label folders without dataset.json, paired by file name (imagesTr/ + labelsTr/, images/ +
labels/, .nii and .nii.gz, nnU-Net's _0000 channel suffix), read by the same dataset as the MSD layout."""

from __future__ import annotations

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from edgeseg.data.volumes import MSDVolumes, paired_cases  # noqa: E402


def _case(i: int, shape=(20, 16, 12)) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) in NIfTI (X, Y, Z) order; the lesion moves with ``i`` so that a mix-up shows."""
    rng = np.random.default_rng(i)
    img = rng.normal(100, 20, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[2 + i : 6 + i, 3:7, 2:5] = 1
    img[lab == 1] += 300
    return img, lab


def _write(path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([0.8, 0.8, 2.5, 1.0])), str(path))


def _paired(root, names_img, names_lab, dirs=("imagesTr", "labelsTr")):
    for i, (ni, nl) in enumerate(zip(names_img, names_lab)):
        img, lab = _case(i)
        _write(root / dirs[0] / ni, img)
        _write(root / dirs[1] / nl, lab)
    return root


def test_paired_folders_read_like_an_msd_folder(tmp_path):
    root = _paired(tmp_path / "d", ["a.nii.gz", "b.nii", "c_0000.nii.gz", "d.nii.gz", "e.nii.gz"],
                   ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii", "e.nii.gz"])
    cases = paired_cases(root)
    assert [c.id for c in cases] == ["a", "b", "c", "d", "e"]
    assert cases[2].image.name == "c_0000.nii.gz" and cases[3].label.name == "d.nii"
    ds = MSDVolumes(root)
    assert ds.ids == ["a", "b", "c", "d", "e"] and ds.num_classes == 2
    for k in range(5):
        image, label, spacing = ds[k]
        _, lab = _case(k)
        assert image.shape == (1, 12, 16, 20) and np.array_equal(label, lab.transpose(2, 1, 0))
        assert spacing == pytest.approx((2.5, 0.8, 0.8))
    tr, va = MSDVolumes(root, "train"), MSDVolumes(root, "val")
    assert len(tr) == 4 and len(va) == 1 and not set(tr.ids) & set(va.ids)


def test_images_labels_folders_and_classes_counted_from_the_labels(tmp_path):
    root = _paired(tmp_path / "d", ["x.nii.gz", "y.nii.gz"], ["x.nii.gz", "y.nii.gz"], dirs=("images", "labels"))
    lab = _case(1)[1]
    lab[10:12, 10:12, 8:10] = 3  # a third foreground class in one case only
    _write(root / "labels" / "y.nii.gz", lab)
    assert MSDVolumes(root).num_classes == 4
    assert MSDVolumes(root, "train").num_classes == 4  # counted over the folder, not over one split


def test_pairing_errors_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no volumes: no .*dataset\.json.*imagesTr/ \+ labelsTr/"):
        MSDVolumes(tmp_path)
    root = _paired(tmp_path / "d", ["a.nii.gz", "b.nii.gz"], ["a.nii.gz", "bb.nii.gz"])
    with pytest.raises(FileNotFoundError, match=r"missing label for .*b\.nii\.gz: expected .*labelsTr/b\.nii\.gz"):
        paired_cases(root)
    (root / "imagesTr" / "b.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"bb\.nii\.gz has no image"):
        paired_cases(root)
    (root / "labelsTr" / "bb.nii.gz").unlink()
    _write(root / "imagesTr" / "a_0001.nii.gz", _case(0)[0])
    with pytest.raises(ValueError, match="multi-channel nnU-Net"):
        paired_cases(root)


def test_3d_training_and_evaluation_on_a_paired_folder(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    import json

    from edgeseg.cli import main as cli
    from edgeseg.data.volumes import synthetic_volume

    for i in range(3):
        vol, lab = synthetic_volume(i, 32)
        _write(tmp_path / "d" / "imagesTr" / f"ct_{i}_0000.nii.gz", vol.transpose(2, 1, 0))
        _write(tmp_path / "d" / "labelsTr" / f"ct_{i}.nii.gz", lab.transpose(2, 1, 0))
    rc = cli(["train", "--model", "ultralightunet3d-t", "--data", str(tmp_path / "d"), "--img-size", "32",
              "--epochs", "1", "--batch-size", "2", "--max-steps", "1", "--threads", "1", "--no-progress",
              "--intensity-clip=-100,240", "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli(["evaluate", "--weights", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "d"),
                "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 1 and out["split"] == "val" and 0.0 <= out["dice"] <= 1.0
