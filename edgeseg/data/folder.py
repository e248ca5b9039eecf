"""Image/mask folder datasets (torch-free): Kvasir-SEG, CVC-ClinicDB, CVC-ColonDB, BUSI / PolypGen naming, splits.

Layouts found by :func:`find_pairs`:

- ``root/images/<id>.<ext>`` + ``root/masks/<id>.<ext>`` (Kvasir-SEG, and the PNG copies of CVC-ClinicDB and
  CVC-ColonDB that PraNet's test sets made common; extensions may differ);
- ``root/Original/<n>.tif`` + ``root/Ground Truth/<n>.tif`` (the official CVC-ClinicDB release, TIFF images
  and masks; ``GroundTruth/`` is accepted too);
- ``root/<n>.<ext>`` + ``root/p<n>.<ext>`` side by side (the official CVC-ColonDB release: ``.bmp`` or
  ``.tiff``; its other per-frame files ``s<n>`` (non-informative region) and ``c<n>`` (contour) are ignored);
- ``<stem>.<ext>`` + ``<stem>_mask.<ext>`` side by side, in ``root`` or any sub-folder (BUSI, PolypGen);
  extra masks ``<stem>_mask_1.png`` ... are merged into the first (BUSI has a few);
- ``root/<split>/`` holding either of the above, or ``root/<split>.txt`` listing the ids of a split
  (one per line, extensions ignored).

Masks: lossy JPEG masks are binarised at > 127 (``mask_mode="binary"``); ``"labels"`` keeps integer class
labels (a palette PNG gives its indices); ``palette=[(r, g, b), ...]`` maps each colour to its index.
Images are returned as RGB uint8 (grayscale inputs are repeated) or gray (``color="gray"``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.common.images import read_image  # noqa: F401 (the one image reader, re-exported)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_MODES = ("binary", "labels")


@dataclass(frozen=True)
class Pair:
    """One image and its mask file(s)."""

    id: str
    image: Path
    masks: tuple[Path, ...]


def _images_in(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


def _read_split_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name = Path(line).name
            ids.append(Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTS else name)
    return ids


# (image folder, mask folder) of the two-folder layouts: Kvasir-SEG's, then the official CVC-ClinicDB's
FOLDER_LAYOUTS = (("images", "masks"), ("Original", "Ground Truth"), ("Original", "GroundTruth"))
_COLONDB_IMAGE = re.compile(r"\d+")
_COLONDB_MASK = re.compile(r"p(\d+)")


def _pairs_images_masks(root: Path, image_dir: str = "images", mask_dir: str = "masks") -> list[Pair]:
    images = _images_in(root / image_dir)
    masks = _images_in(root / mask_dir)
    pairs = []
    for sid, img in images.items():
        m = masks.get(sid) or masks.get(f"{sid}_mask")
        if m is None:
            raise FileNotFoundError(f"missing mask for {img}: expected {root / mask_dir / sid}.<jpg|png|tif|...>")
        pairs.append(Pair(sid, img, (m,)))
    return pairs


def _two_folders(root: Path) -> tuple[str, str] | None:
    """The (image, mask) folder names of ``root``'s two-folder layout, or None when it has none.

    Raises:
        FileNotFoundError: an image folder without its mask folder.
    """
    for image_dir, mask_dir in FOLDER_LAYOUTS:
        if (root / image_dir).is_dir() and (root / mask_dir).is_dir():
            return image_dir, mask_dir
    for image_dir in dict.fromkeys(i for i, _ in FOLDER_LAYOUTS):
        if (root / image_dir).is_dir():
            wanted = " or ".join(f"{m}/" for i, m in FOLDER_LAYOUTS if i == image_dir)
            raise FileNotFoundError(f"{root} has {image_dir}/ but no {wanted} folder; the masks must be in "
                                    f"{root / wanted.split(' or ')[0].rstrip('/')}")
    return None


def _pairs_numbered(root: Path) -> list[Pair]:
    """CVC-ColonDB: ``<n>.<ext>`` images with ``p<n>.<ext>`` polyp masks in one folder (``s<n>``/``c<n>``
    files, the non-informative-region and contour masks, are not used); [] when the folder is not so named."""
    files = _images_in(root)
    masks = {m.group(1): p for stem, p in files.items() if (m := _COLONDB_MASK.fullmatch(stem))}
    if not masks:
        return []
    pairs = []
    for stem, img in files.items():
        if not _COLONDB_IMAGE.fullmatch(stem):
            continue
        if stem not in masks:
            raise FileNotFoundError(f"missing mask for {img}: expected {root / ('p' + stem)}{img.suffix} "
                                    "(the CVC-ColonDB naming: <n> image, p<n> polyp mask)")
        pairs.append(Pair(stem, img, (masks[stem],)))
    return pairs


def _pairs_suffix(root: Path) -> list[Pair]:
    pairs = []
    mask_files = sorted(p for p in root.rglob("*_mask*") if p.suffix.lower() in IMAGE_EXTS)
    by_stem: dict[Path, list[Path]] = {}
    for m in mask_files:
        stem, _, tail = m.stem.rpartition("_mask")
        if tail and not tail.lstrip("_").isdigit():
            continue
        by_stem.setdefault(m.parent / stem, []).append(m)
    for base, ms in sorted(by_stem.items()):
        cands = [base.with_name(base.name + e) for e in IMAGE_EXTS] + \
                [base.with_name(base.name + e.upper()) for e in IMAGE_EXTS]
        img = next((c for c in cands if c.is_file()), None)
        if img is None:
            raise FileNotFoundError(f"mask {ms[0]} has no image beside it (expected {base}.<jpg|png|...>)")
        ms.sort(key=lambda p: (len(p.stem), p.name))  # <stem>_mask before <stem>_mask_1
        pairs.append(Pair(str(base.relative_to(root)), img, tuple(ms)))
    # images without any mask in such a folder are missing masks
    have = {p.image for p in pairs}
    for img in sorted(q for q in root.rglob("*") if q.suffix.lower() in IMAGE_EXTS and "_mask" not in q.stem):
        if img not in have:
            raise FileNotFoundError(f"missing mask for {img}: expected {img.with_name(img.stem + '_mask.png')}")
    return pairs


def find_pairs(root: str | Path, split: str | None = None) -> list[Pair]:
    """All (image, mask) pairs under ``root`` in one of the supported layouts, sorted by id.

    Args:
        root: dataset folder.
        split: a split name ("train", "val", "test"): ``root/<split>/`` or the ids in ``root/<split>.txt``.
            None takes every pair.

    Raises:
        FileNotFoundError: no such folder, a missing mask, or an unknown split (with the available ones).
        ValueError: the folder holds no image/mask pairs (with the layouts that are understood).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if split is not None and (root / split).is_dir():
        return find_pairs(root / split)
    folders = _two_folders(root)
    if folders is not None:
        pairs = _pairs_images_masks(root, *folders)
    else:
        pairs = _pairs_numbered(root) or _pairs_suffix(root)
    if not pairs:
        raise ValueError(
            f"no image/mask pairs in {root}: expected images/<id>.jpg + masks/<id>.jpg, Original/<n>.tif + "
            "'Ground Truth'/<n>.tif (CVC-ClinicDB), <n>.tiff + p<n>.tiff (CVC-ColonDB), or <stem>.png + "
            "<stem>_mask.png"
        )
    if split is not None:
        split_file = root / f"{split}.txt"
        if not split_file.is_file():
            layout_dirs = {d for pair in FOLDER_LAYOUTS for d in pair}
            have = sorted({p.stem for p in root.glob("*.txt")} | {d.name for d in root.iterdir() if d.is_dir()
                                                                   and d.name not in layout_dirs})
            raise FileNotFoundError(
                f"split {split!r} not found: no {split_file} and no folder {root / split} "
                f"(available: {', '.join(have) or 'none'}; or pass no split to use every pair)"
            )
        by_id = {p.id: p for p in pairs}
        wanted = _read_split_ids(split_file)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise FileNotFoundError(f"{split_file}: {len(missing)} listed id(s) have no image/mask pair, "
                                    f"e.g. {missing[0]!r}")
        pairs = [by_id[i] for i in wanted]
    return sorted(pairs, key=lambda p: p.id)


def read_mask(path: str | Path, mode: str = "binary",
              palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Decode a mask into uint8 HxW class labels.

    Args:
        path: mask file.
        mode: "binary" (any channel > 127 is foreground; robust to JPEG artefacts) or "labels" (integer
            values, or the indices of a palette PNG).
        palette: RGB colours, one per class in order; each pixel gets the index of the nearest colour.

    Raises:
        ValueError: unreadable file or unknown mode.
    """
    from PIL import Image

    path = Path(path)
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; valid: {', '.join(MASK_MODES)}")
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if palette is not None:
                rgb = np.asarray(im.convert("RGB"), dtype=np.int32)
                pal = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
                d = ((rgb[:, :, None, :] - pal[None, None]) ** 2).sum(-1)
                return d.argmin(-1).astype(np.uint8)
            if mode == "labels":
                arr = np.asarray(im if im.mode in ("L", "P", "I", "I;16") else im.convert("L"))
                return arr.astype(np.uint8)
            arr = np.asarray(im)
            lossy = (im.format or "").upper() in ("JPEG", "MPO", "WEBP")
    except OSError as exc:
        raise ValueError(f"{path}: unreadable or truncated mask file ({exc})") from None
    except Exception as exc:
        raise ValueError(f"{path}: unreadable mask file ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    return binary_foreground(arr, lossy)


def binary_foreground(arr: np.ndarray, lossy: bool = False) -> np.ndarray:
    """Foreground (uint8 0/1) of a binary mask, whatever value range it was stored in.

    0/1 masks (exported label maps) and small label maps in lossless files are foreground where non-zero;
    0/255 masks, and any lossy (JPEG) mask, are foreground above half range (robust to JPEG artefacts);
    16-bit masks (0/65535) likewise above half of their range, unless their values are those of labels.
    """
    top = int(arr.max()) if arr.size else 0
    if top <= 1 or (not lossy and top < 128):
        return (arr > 0).astype(np.uint8)
    if arr.dtype.itemsize > 1 and top > 255:  # 16/32-bit 0/65535-style masks
        return (arr > np.iinfo(arr.dtype).max // 2 if arr.dtype.kind in "iu" else arr > top / 2).astype(np.uint8)
    return (arr > 127).astype(np.uint8)


def warn_if_no_foreground(masks: np.ndarray, what: str, log: Any = None) -> bool:
    """Say so when a whole mask set is empty (a wrong folder, or masks stored in a range nobody expects);
    returns whether it was."""
    masks = np.asarray(masks)
    if masks.size and not masks.any():
        msg = (f"WARNING: {what}: no mask has any foreground pixel; check that the masks folder holds the "
               "masks (0/1, 0/255 or 16-bit 0/65535 binary masks, or label maps with --mask-mode labels)")
        (log or (lambda m: print(m, file=sys.stderr)))(msg)
        return True
    return False


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Stretch an image (bilinear) and its mask (nearest) to ``size`` = (H, W)."""
    from PIL import Image

    h, w = size
    if image.shape[:2] != (h, w):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if mask is not None and mask.shape[:2] != (h, w):
        mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return image, mask


class SegmentationFolder:
    """An image/mask folder as a sequence of ``(image uint8, mask uint8 HxW)`` (torch-free).

    Args:
        root: dataset folder (see :func:`find_pairs` for layouts).
        split: split name, or None for every pair.
        mask_mode: "binary" or "labels".
        palette: RGB colours of a colour-coded multi-class mask.
        color: "rgb" or "gray" input.
        size: (H, W) to resize to on load, or None to keep the file's size.

    Raises:
        ValueError: when an image and its mask differ in size (names both files).

    Examples:
        >>> ds = SegmentationFolder("data/kvasir-seg", split="train", size=(256, 256))
        >>> image, mask = ds[0]
    """

    def __init__(self, root: str | Path, split: str | None = None, mask_mode: str = "binary",
                 palette: Sequence[Sequence[int]] | None = None, color: str = "rgb",
                 size: tuple[int, int] | None = None):
        if color not in ("rgb", "gray"):
            raise ValueError(f"color must be 'rgb' or 'gray', got {color!r}")
        if mask_mode not in MASK_MODES:
            raise ValueError(f"unknown mask mode {mask_mode!r}; valid: {', '.join(MASK_MODES)}")
        self.root = Path(root)
        self.pairs = find_pairs(root, split)
        self.ids = [p.id for p in self.pairs]
        self.mask_mode, self.palette, self.color = mask_mode, palette, color
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int, resize: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask of pair ``i``; ``resize=False`` keeps the file's own size."""
        pair = self.pairs[i]
        image = read_image(pair.image, self.color)
        mask = read_mask(pair.masks[0], self.mask_mode, self.palette)
        for extra in pair.masks[1:]:
            more = read_mask(extra, self.mask_mode, self.palette)
            if more.shape == mask.shape:
                mask = np.maximum(mask, more)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"{pair.image}: image is {image.shape[1]}x{image.shape[0]} but its mask {pair.masks[0]} is "
                f"{mask.shape[1]}x{mask.shape[0]}; they must have the same size"
            )
        if resize and self.size is not None:
            image, mask = resize_pair(image, mask, self.size)
        return image, mask

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load(i)
