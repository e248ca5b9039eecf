"""Image/mask folders, mask decoding, synthetic phantoms and transforms."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgeseg.common.phantoms import (
    SyntheticPolypDataset,
    synthetic_sample,
    synthetic_sequence,
    write_synthetic_folder,
)
from edgeseg.data.folder import SegmentationFolder, find_pairs, read_image, read_mask
from edgeseg.data.sources import open_train_val
from edgeseg.data.transforms import normalize, scaled_size
from tests.conftest import REPO


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_varied():
    a_img, a_mask = synthetic_sample(3, size=64)
    b_img, b_mask = synthetic_sample(3, size=64)
    c_img, _ = synthetic_sample(4, size=64)
    assert a_img.shape == (64, 64, 3) and a_img.dtype == np.uint8 and a_mask.shape == (64, 64)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert set(np.unique(a_mask)) <= {0, 1}


def test_synthetic_dataset_has_empty_and_polyp_frames_and_pinkish_mucosa():
    ds = SyntheticPolypDataset(40, size=48, seed=5)
    fg = [ds[i][1].mean() for i in range(len(ds))]
    assert any(f == 0 for f in fg) and sum(f > 0 for f in fg) >= 30  # ~1 in 10 empty
    img, mask = ds[0]
    bg = img[mask == 0].astype(float).mean(0)
    assert bg[0] > bg[1] and bg[0] > bg[2]  # red-dominant mucosa
    assert ds[-1][0].shape == (48, 48, 3)
    with pytest.raises(IndexError):
        ds[40]


def test_synthetic_polyps_differ_from_mucosa():
    # learnable: the mean colour inside masks differs from the surroundings in most frames
    diffs = []
    for s in range(12):
        img, mask = synthetic_sample(s, size=96, max_polyps=1)
        if mask.any():
            diffs.append(np.abs(img[mask == 1].mean(0) - img[mask == 0].mean(0)).max())
    assert np.median(diffs) > 8


def test_synthetic_sequence_is_coherent():
    frames = list(synthetic_sequence(5, size=64, seed=2))
    assert len(frames) == 5 and all(m.any() for _, m in frames)
    a, b = frames[0][1].astype(bool), frames[1][1].astype(bool)
    overlap = (a & b).sum() / max(1, (a | b).sum())
    assert overlap > 0.5  # the polyp moves smoothly


def test_synthetic_imports_without_torch():
    code = ("import sys\nclass B:\n    def find_spec(self, n, p=None, t=None):\n"
            "        if n == 'torch' or n.startswith('torch.'):\n            raise ModuleNotFoundError(n)\n"
            "sys.meta_path.insert(0, B())\n"
            "import edgeseg.data, edgeseg.common.phantoms, edgeseg.data.folder, edgeseg.data.transforms\n"
            "from edgeseg.common.phantoms import synthetic_sample\nsynthetic_sample(0, 32)\n"
            "assert 'torch' not in sys.modules\nprint('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "ok", res.stderr


# ---------------------------------------------------------------- folders


def test_kvasir_layout_with_jpeg_masks_and_splits(tmp_path):
    root = write_synthetic_folder(tmp_path / "kv", 10, size=64, seed=1)
    # lossy JPEG masks like Kvasir-SEG: re-save masks as .jpg and drop the png
    for p in sorted((root / "masks").glob("*.png")):
        m = np.asarray(Image.open(p))
        _save(p.with_suffix(".jpg"), m, quality=60)
        p.unlink()
    pairs = find_pairs(root)
    assert len(pairs) == 10 and all(p.masks[0].suffix == ".jpg" for p in pairs)
    assert len(find_pairs(root, "train")) == 8 and len(find_pairs(root, "val")) == 2
    ds = SegmentationFolder(root, "val")
    img, mask = ds[0]
    assert set(np.unique(mask)) <= {0, 1}
    truth = SyntheticPolypDataset(10, 64, 1)[8][1]
    assert (mask == truth).mean() > 0.99  # binarised at > 127 despite JPEG artefacts


def test_suffix_naming_with_subfolders_and_extra_masks(tmp_path):
    img = np.full((20, 30, 3), 90, np.uint8)
    m1 = np.zeros((20, 30), np.uint8)
    m1[2:6, 2:6] = 255
    m2 = np.zeros((20, 30), np.uint8)
    m2[10:12, 10:20] = 255
    _save(tmp_path / "benign" / "benign (1).png", img)
    _save(tmp_path / "benign" / "benign (1)_mask.png", m1)
    _save(tmp_path / "benign" / "benign (1)_mask_1.png", m2)
    _save(tmp_path / "normal" / "normal (3).png", img[..., 0])  # grayscale input
    _save(tmp_path / "normal" / "normal (3)_mask.png", np.zeros((20, 30), np.uint8))  # empty mask is valid
    ds = SegmentationFolder(tmp_path)
    assert ds.ids == ["benign/benign (1)", "normal/normal (3)"]
    image, mask = ds[0]
    assert mask.sum() == 16 + 20  # both masks merged
    image, mask = ds[1]
    assert image.shape == (20, 30, 3) and mask.sum() == 0
    gray = SegmentationFolder(tmp_path, color="gray", size=(32, 64))[1][0]
    assert gray.shape == (32, 64)


def test_label_and_palette_masks(tmp_path):
    lab = np.zeros((8, 8), np.uint8)
    lab[:4, :4], lab[4:, 4:] = 1, 2
    _save(tmp_path / "l.png", lab)
    assert np.array_equal(read_mask(tmp_path / "l.png", "labels"), lab)
    pal = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    rgb = np.asarray(pal, np.uint8)[lab]
    _save(tmp_path / "c.png", rgb)
    assert np.array_equal(read_mask(tmp_path / "c.png", palette=pal), lab)
    with pytest.raises(ValueError, match="valid: binary, labels"):
        read_mask(tmp_path / "l.png", "rgb")


def test_split_missing_lists_available(tmp_path):
    root = write_synthetic_folder(tmp_path / "d", 4, size=32)
    with pytest.raises(FileNotFoundError, match=r"split 'test' not found.*available: train, val"):
        find_pairs(root, "test")


def test_holdout_when_no_val_split(tmp_path):
    root = write_synthetic_folder(tmp_path / "d", 20, size=32)
    (root / "train.txt").unlink()
    (root / "val.txt").unlink()
    tr, va, ts, vs = open_train_val(str(root), None, 32)
    assert len(tr) == 18 and len(va) == 2 and not set(tr.ids) & set(va.ids)
    assert vs.split == "holdout-val-0"


# ---------------------------------------------------------------- bad input


def test_truncated_image_names_the_file(tmp_path):
    p = tmp_path / "x.jpg"
    _save(p, np.zeros((64, 64, 3), np.uint8) + 100)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"x\.jpg: unreadable or truncated"):
        read_image(p)
    q = tmp_path / "y.png"
    q.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"y\.png: unreadable"):
        read_image(q)


def test_size_mismatch_missing_mask_and_empty_folder(tmp_path):
    root = tmp_path / "d"
    _save(root / "images" / "a.jpg", np.zeros((16, 16, 3), np.uint8))
    _save(root / "masks" / "a.png", np.zeros((16, 20), np.uint8))
    with pytest.raises(ValueError, match=r"a\.jpg: image is 16x16 but its mask .*a\.png is 20x16"):
        SegmentationFolder(root)[0]
    _save(root / "images" / "b.jpg", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"missing mask for .*b\.jpg"):
        find_pairs(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image/mask pairs"):
        find_pairs(tmp_path / "empty")


# ---------------------------------------------------------------- transforms


def test_normalize_and_scaled_size():
    img = np.full((4, 4, 3), 255, np.uint8)
    x = normalize(img)
    assert x.shape == (3, 4, 4)
    assert np.allclose(x[:, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], atol=1e-5)
    assert [scaled_size(256, s) for s in (0.75, 1.0, 1.25)] == [192, 256, 320]
    assert scaled_size(64, 0.75) == 64 and scaled_size(40, 1.0) == 32


def test_batch_augment_keeps_image_and_mask_aligned():
    torch = pytest.importorskip("torch")
    from edgeseg.data.transforms import BatchAugment

    g = torch.Generator().manual_seed(0)
    m = torch.zeros(6, 32, 32, dtype=torch.long)
    m[:, 4:12, 6:20] = 1
    x = m[:, None].float().repeat(1, 3, 1, 1) * 2.0 - 1.0  # the image equals the mask
    xa, ma = BatchAugment(max_angle=0, scales=(1.0, 1.5))(x.clone(), m.clone(), g)
    assert xa.shape[-1] in (32, 64) and ma.shape[-1] == xa.shape[-1]
    assert ((xa[:, 0] > 0).long() == ma).float().mean() > 0.99
    xf, mf = BatchAugment(hflip=1, vflip=0, rot90=0, max_angle=0, scales=(1.0,))(x.clone(), m.clone(), g)
    assert torch.equal(mf, m.flip(-1)) and torch.equal(xf, x.flip(-1))
    xr, mr = BatchAugment(hflip=0, vflip=0, rot90=0, max_angle=20, scales=(1.0,))(x.clone(), m.clone(), g)
    assert ((xr[:, 0] > 0).long() == mr).float().mean() > 0.97
    assert mr.sum() > 0.8 * m.sum()


def test_batch_augment_zoom_and_colour_jitter():
    torch = pytest.importorskip("torch")
    from edgeseg.data.transforms import BatchAugment

    g = torch.Generator().manual_seed(1)
    m = torch.zeros(64, 64, 64, dtype=torch.long)
    m[:, 16:48, 16:48] = 1
    x = m[:, None].float().repeat(1, 3, 1, 1) * 2.0 - 1.0
    zoomed = BatchAugment(0, 0, 0, 0, (1.0,), zoom=0.3)
    xz, mz = zoomed(x.clone(), m.clone(), g)
    assert ((xz[:, 0] > 0).long() == mz).float().mean() > 0.99  # still aligned
    area = mz.sum((1, 2)).float() / m[0].sum()
    # magnification in [0.7, 1.3] -> area in [0.49, 1.69]; 64 draws cover most of it
    assert 0.45 < area.min() < 0.7 and 1.4 < area.max() < 1.75
    # without zoom or colour, no extra random numbers: the stream of an existing recipe is unchanged
    plain = BatchAugment(max_angle=10, scales=(1.0,))
    a = plain(x.clone(), m.clone(), torch.Generator().manual_seed(3))
    b = BatchAugment(max_angle=10, scales=(1.0,), zoom=0.0, color=0.0)
    imgs01 = torch.rand(4, 3, 8, 8)
    assert b.jitter_colors(imgs01, torch.Generator().manual_seed(3)) is imgs01
    assert torch.equal(a[0], b(x.clone(), m.clone(), torch.Generator().manual_seed(3))[0])

    jit = BatchAugment(color=0.3).jitter_colors(torch.rand(32, 3, 16, 16), torch.Generator().manual_seed(0))
    assert jit.min() >= 0 and jit.max() <= 1
    src = torch.rand(32, 3, 16, 16) * 0.5 + 0.25
    out = BatchAugment(color=0.3).jitter_colors(src.clone(), torch.Generator().manual_seed(0))
    ratio = out.mean((1, 2, 3)) / src.mean((1, 2, 3))
    assert 0.6 < ratio.min() < 0.95 and 1.05 < ratio.max() < 1.45  # brightness moves per image
    gray = torch.rand(4, 1, 16, 16)  # one channel: brightness and contrast only
    assert BatchAugment(color=0.2).jitter_colors(gray, torch.Generator().manual_seed(0)).shape == gray.shape


@pytest.mark.kvasir
def test_real_kvasir_split(kvasir_root):
    assert len(find_pairs(kvasir_root, "train")) == 878
    val = SegmentationFolder(kvasir_root, "val")
    assert len(val) == 120
    img, mask = val[0]
    assert img.shape == (256, 256, 3) and set(np.unique(mask)) <= {0, 1} and mask.any()


@pytest.mark.parametrize("kind", ["0/1 png", "0/255 png", "0/255 jpeg", "16-bit 0/1", "16-bit 0/65535", "labels 0/1/2"])
def test_binary_masks_are_read_in_any_value_range(tmp_path, kind):
    """0/1 label exports used to read as empty masks (train Dice 1.0, evaluate 0.0, both exit 0)."""
    from PIL import Image

    from edgeseg.data.folder import read_mask

    truth = np.zeros((32, 40), np.uint8)
    truth[8:20, 10:30] = 1
    stored, suffix = {
        "0/1 png": (truth, ".png"),
        "0/255 png": (truth * 255, ".png"),
        "0/255 jpeg": (truth * 255, ".jpg"),
        "16-bit 0/1": (truth.astype(np.uint16), ".png"),
        "16-bit 0/65535": (truth.astype(np.uint16) * 65535, ".png"),
        "labels 0/1/2": (truth * np.where(np.arange(40) < 20, 1, 2).astype(np.uint8), ".png"),
    }[kind]
    path = tmp_path / f"m{suffix}"
    Image.fromarray(stored).save(path, **({"quality": 80} if suffix == ".jpg" else {}))
    got = read_mask(path)
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
    assert np.mean(got == truth) > 0.99  # JPEG edges may blur a pixel or two


def test_an_empty_mask_set_is_reported(capsys):
    from edgeseg.data.folder import warn_if_no_foreground

    assert warn_if_no_foreground(np.zeros((3, 8, 8), np.uint8), "masks/")
    assert "no mask has any foreground" in capsys.readouterr().err
    assert not warn_if_no_foreground(np.eye(8, dtype=np.uint8)[None], "masks/")
