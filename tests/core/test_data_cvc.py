"""The official CVC-ClinicDB (Original/ + Ground Truth/, TIFF) and CVC-ColonDB (<n> + p<n> in one folder)
layouts, and TIFF masks in every storage the datasets and their copies use. Folders are made on the fly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeseg.data.folder import SegmentationFolder, find_pairs, read_mask
from edgeseg.data.sources import open_train_val


def _frame(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _disc(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    """A 0/1 mask: a disc whose position depends on ``i`` (so a mix-up of masks shows)."""
    yy, xx = np.mgrid[:h, :w]
    return (((yy - 6 - i % 10) ** 2 + (xx - 8 - 2 * (i % 8)) ** 2) < 25).astype(np.uint8)


def _save_mask(path, mask01: np.ndarray, kind: str) -> None:
    """Write a 0/1 mask as a TIFF the way datasets store them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "L 0/255":
        Image.fromarray(mask01 * 255).save(path)
    elif kind == "bilevel":
        Image.fromarray(mask01 * 255).convert("1").save(path)
    elif kind == "16-bit 0/65535":
        Image.fromarray(mask01.astype(np.uint16) * 65535).save(path)
    elif kind == "RGB 0/255 lzw":
        Image.fromarray(np.repeat(mask01[..., None] * 255, 3, axis=2)).save(path, compression="tiff_lzw")
    elif kind == "float 0/1":
        Image.fromarray(mask01.astype(np.float32)).save(path)
    else:  # pragma: no cover
        raise AssertionError(kind)


TIFF_KINDS = ["L 0/255", "bilevel", "16-bit 0/65535", "RGB 0/255 lzw", "float 0/1"]


@pytest.mark.parametrize("kind", TIFF_KINDS)
def test_tiff_masks_are_read_as_binary_foreground(tmp_path, kind):
    mask = _disc(3)
    _save_mask(tmp_path / "m.tif", mask, kind)
    got = read_mask(tmp_path / "m.tif")
    assert got.dtype == np.uint8 and np.array_equal(got, mask), kind


def _clinicdb(root, n: int = 6, gt: str = "Ground Truth"):
    for i in range(1, n + 1):
        (root / "Original").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_frame(i)).save(root / "Original" / f"{i}.tif")
        _save_mask(root / gt / f"{i}.tif", _disc(i), TIFF_KINDS[i % len(TIFF_KINDS)])
    return root


@pytest.mark.parametrize("gt", ["Ground Truth", "GroundTruth"])
def test_official_cvc_clinicdb_layout(tmp_path, gt):
    root = _clinicdb(tmp_path / "CVC-ClinicDB", gt=gt)
    pairs = find_pairs(root)
    assert [p.id for p in pairs] == ["1", "2", "3", "4", "5", "6"]
    ds = SegmentationFolder(root)
    for i in range(6):
        image, mask = ds[i]
        pid = int(ds.ids[i])
        assert np.array_equal(image, _frame(pid)) and np.array_equal(mask, _disc(pid))
    train, val, tspec, vspec = open_train_val(str(root), None, 32)  # no split files: a 10% hold-out
    assert len(train) + len(val) == 6 and vspec.split.startswith("holdout-val")


def test_clinicdb_without_ground_truth_says_where_the_masks_go(tmp_path):
    root = tmp_path / "c"
    (root / "Original").mkdir(parents=True)
    Image.fromarray(_frame(1)).save(root / "Original" / "1.tif")
    with pytest.raises(FileNotFoundError, match="has Original/ but no Ground Truth/ or GroundTruth/ folder"):
        find_pairs(root)
    _save_mask(root / "Ground Truth" / "2.tif", _disc(2), "L 0/255")
    with pytest.raises(FileNotFoundError, match=r"missing mask for .*1\.tif: expected .*Ground Truth/1"):
        find_pairs(root)


@pytest.mark.parametrize("ext", [".tiff", ".bmp"])
def test_official_cvc_colondb_layout(tmp_path, ext):
    root = tmp_path / "CVC-ColonDB"
    root.mkdir()
    for i in (1, 2, 10):
        Image.fromarray(_frame(i)).save(root / f"{i}{ext}")
        Image.fromarray(_disc(i) * 255).save(root / f"p{i}{ext}")
        # the non-informative region and contour masks must not be taken for the polyp
        Image.fromarray(np.full((24, 32), 255, np.uint8)).save(root / f"s{i}{ext}")
        Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / f"c{i}{ext}")
    pairs = find_pairs(root)
    assert [p.id for p in pairs] == ["1", "10", "2"]  # ids are names, sorted as text like every layout's
    assert all(p.masks[0].name == f"p{p.id}{ext}" for p in pairs)
    ds = SegmentationFolder(root)
    assert all(np.array_equal(ds[k][1], _disc(int(ds.ids[k]))) for k in range(3))
    (root / f"p2{ext}").unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing mask for .*2{ext}: expected .*p2{ext}"):
        find_pairs(root)


def test_training_runs_on_the_clinicdb_layout(tmp_path, capsys):
    pytest.importorskip("torch")
    from edgeseg.cli import main as cli
    from edgeseg.weights import read_checkpoint

    root = _clinicdb(tmp_path / "CVC-ClinicDB", n=10)
    rc = cli(["train", "--model", "ultralightunet-t", "--data", str(root), "--epochs", "1", "--img-size", "32",
              "--batch-size", "4", "--max-steps", "1", "--threads", "1", "--no-progress", "--no-multiscale",
              "--out", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    ckpt = read_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["recipe"]["train_data"]["n"] == 9 and ckpt["recipe"]["val_data"]["n"] == 1
