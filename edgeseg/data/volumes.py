"""3D volumes: NIfTI in the Medical Segmentation Decathlon layout or in image/label folders paired by name,
intensity normalisation, foreground-aware patch sampling, and sliding-window inference.

MSD layout: ``root/dataset.json`` (``"training": [{"image": "./imagesTr/x.nii.gz", "label":
"./labelsTr/x.nii.gz"}, ...]``, ``"labels"``, ``"modality"``), ``root/imagesTr/``, ``root/labelsTr/``.
Without ``dataset.json``: ``root/imagesTr/`` + ``root/labelsTr/`` (or ``images/`` + ``labels/``) whose NIfTI
files (``.nii`` or ``.nii.gz``) pair by name; an image may carry nnU-Net's channel suffix (``x_0000.nii.gz``
for the label ``x.nii.gz``). The classes are then counted from the labels (background + the largest label).
Arrays are returned channels-first in (D, H, W) order (NIfTI's (X, Y, Z) axes reversed), with the voxel
spacing in the same order. nibabel (and MONAI for sliding windows) come with ``pip install 'edgeseg[3d]'``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.common.deps import require


@dataclass(frozen=True)
class VolumeCase:
    """One training case of an MSD dataset."""

    id: str
    image: Path
    label: Path


def read_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """(array with axes reversed to (..., D, H, W) order, spacing in the same order) of a NIfTI file.

    A 4D file (X, Y, Z, C) becomes (C, D, H, W).

    Raises:
        FileNotFoundError / ValueError: missing or unreadable file (names it).
    """
    nib = require("nibabel", "reading NIfTI volumes")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"volume not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except Exception as exc:
        raise ValueError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 3:
        arr = data.transpose(2, 1, 0)
    elif data.ndim == 4:
        arr = data.transpose(3, 2, 1, 0)
    else:
        raise ValueError(f"{path}: expected a 3D or 4D volume, got shape {data.shape}")
    return np.ascontiguousarray(arr), zooms[::-1]


def msd_cases(root: str | Path) -> tuple[list[VolumeCase], dict[str, Any]]:
    """The labelled training cases of an MSD dataset folder and its ``dataset.json``.

    Raises:
        FileNotFoundError: no ``dataset.json`` / listed files missing.
        ValueError: malformed ``dataset.json`` or no training cases.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} is not a Medical Segmentation Decathlon folder: no {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
        entries = meta["training"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{meta_path}: malformed dataset.json ({exc}); it needs a 'training' list") from None
    cases = []
    for e in entries:
        img, lab = root / e["image"], root / e["label"]
        for p in (img, lab):
            if not p.is_file():
                raise FileNotFoundError(f"{meta_path} lists {p}, which does not exist")
        cases.append(VolumeCase(img.name.split(".nii")[0], img, lab))
    if not cases:
        raise ValueError(f"{meta_path}: no training cases listed")
    return cases, meta


# (image folder, label folder) of the paired layout, in the order they are looked for
PAIRED_FOLDERS = (("imagesTr", "labelsTr"), ("images", "labels"))
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _nifti_stem(path: Path) -> str | None:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix) and not name.startswith("."):
            return name[: -len(suffix)]
    return None


def _niftis(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = _nifti_stem(p)
        if stem is not None and p.is_file():
            found.setdefault(stem, p)
    return found


def paired_cases(root: str | Path) -> list[VolumeCase]:
    """The cases of NIfTI image/label folders without ``dataset.json``, paired by file name.

    ``imagesTr/x.nii.gz`` pairs with ``labelsTr/x.nii.gz`` (``.nii`` and ``.nii.gz`` mix freely); nnU-Net's
    single-channel ``x_0000.nii.gz`` pairs with ``x.nii.gz`` too. ``images/`` + ``labels/`` work the same.

    Raises:
        FileNotFoundError: no such folders, or an image without its label (or a label without its image).
        ValueError: the folders hold no NIfTI files, or a multi-channel nnU-Net case (``x_0001``).
    """
    root = Path(root)
    for image_dir, label_dir in PAIRED_FOLDERS:
        if (root / image_dir).is_dir() and (root / label_dir).is_dir():
            break
    else:
        raise FileNotFoundError(
            f"{root} holds no volumes: no {root / 'dataset.json'} (a Medical Segmentation Decathlon folder) and no "
            "NIfTI image/label folders paired by name (imagesTr/ + labelsTr/, or images/ + labels/)")
    images, labels = _niftis(root / image_dir), _niftis(root / label_dir)
    if not images:
        raise ValueError(f"{root / image_dir} holds no NIfTI volumes (.nii or .nii.gz)")
    cases, used = [], set()
    for stem, img in images.items():
        case = stem
        if stem not in labels and stem[-5:-4] == "_" and stem[-4:].isdigit():  # nnU-Net channel suffix
            case = stem[:-5]
            if stem[-4:] != "0000":
                raise ValueError(f"{img}: multi-channel nnU-Net cases (_0001, ...) are not read; store the "
                                 "channels in one 4D NIfTI per case")
        if case not in labels:
            raise FileNotFoundError(f"missing label for {img}: expected {root / label_dir / case}.nii.gz "
                                    "(images and labels pair by file name)")
        cases.append(VolumeCase(case, img, labels[case]))
        used.add(case)
    orphans = sorted(set(labels) - used)
    if orphans:
        raise FileNotFoundError(f"{labels[orphans[0]]} has no image: expected {root / image_dir / orphans[0]}"
                                ".nii.gz (images and labels pair by file name)")
    return cases


def volume_cases(root: str | Path) -> tuple[list[VolumeCase], dict[str, Any]]:
    """The labelled cases of a volume folder and its metadata: the MSD ``dataset.json`` where there is one,
    else the paired folders (:func:`paired_cases`) with ``{}``."""
    root = Path(root)
    if (root / "dataset.json").is_file():
        return msd_cases(root)
    return paired_cases(root), {}


def normalize_intensity(volume: np.ndarray, clip: tuple[float, float] | None = None,
                        percentiles: tuple[float, float] | None = (0.5, 99.5), zscore: bool = True) -> np.ndarray:
    """Clip intensities (to fixed bounds, e.g. a CT window, or to percentiles) then z-score or scale to 0-1.

    Works per channel on (C, D, H, W) or on a single (D, H, W) volume; returns float32.
    """
    v = np.asarray(volume, dtype=np.float32)
    chans = v[None] if v.ndim == 3 else v
    out = np.empty_like(chans)
    for c, x in enumerate(chans):
        if clip is not None:
            lo, hi = clip
        elif percentiles is not None:
            lo, hi = np.percentile(x, percentiles)
        else:
            lo, hi = float(x.min()), float(x.max())
        x = np.clip(x, lo, hi)
        if zscore:
            out[c] = (x - x.mean()) / max(float(x.std()), 1e-6)
        else:
            out[c] = (x - lo) / max(hi - lo, 1e-6)
    return out[0] if v.ndim == 3 else out


def sample_patches(image: np.ndarray, label: np.ndarray, patch_size: Sequence[int], n: int,
                   fg_ratio: float = 0.5, rng: np.random.Generator | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random (image, label) patches; a ``fg_ratio`` share is centred on a foreground voxel.

    Args:
        image: (C, D, H, W) or (D, H, W).
        label: (D, H, W) integer labels (0 = background).
        patch_size: (d, h, w); volumes smaller than a patch are zero-padded.
        n: number of patches.
        fg_ratio: share of patches centred on foreground (when the case has any).
        rng: numpy generator (default: seeded 0).
    """
    rng = rng or np.random.default_rng(0)
    img = image[None] if image.ndim == 3 else image
    ps = np.asarray(patch_size, int)
    pad = [(0, 0)] + [(0, max(0, int(p - s))) for p, s in zip(ps, label.shape)]
    img = np.pad(img, pad)
    lab = np.pad(label, pad[1:])
    shape = np.asarray(lab.shape)
    fg = np.argwhere(lab > 0)
    n_fg = int(round(n * fg_ratio)) if len(fg) else 0
    out = []
    for k in range(n):
        if k < n_fg:
            centre = fg[rng.integers(len(fg))]
            start = np.clip(centre - ps // 2, 0, shape - ps)
        else:
            start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, ps)])
        sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, ps))
        out.append((img[(slice(None), *sl)], lab[sl]))
    return out


class MSDVolumes:
    """A volume folder as normalised ``(image (C, D, H, W) float32, label (D, H, W) uint8, spacing)`` cases.

    Args:
        root: an MSD folder (with ``dataset.json``) or NIfTI image/label folders paired by name (see
            :func:`paired_cases`).
        split: "train", "val" or None (all); the split is a deterministic ``val_fraction`` hold-out.
        val_fraction: share of cases for validation.
        seed: seed of the hold-out.
        clip: fixed intensity bounds (e.g. (-100, 240) for a CT abdomen window); default percentiles.

    Examples:
        >>> ds = MSDVolumes("Task09_Spleen", split="train", clip=(-100, 240))
        >>> image, label, spacing = ds[0]
    """

    def __init__(self, root: str | Path, split: str | None = None, val_fraction: float = 0.2, seed: int = 0,
                 clip: tuple[float, float] | None = None):
        cases, self.meta = volume_cases(root)
        if split not in (None, "train", "val"):
            raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
        if split is not None:
            order = np.random.default_rng(seed).permutation(len(cases))
            n_val = max(1, int(round(len(cases) * val_fraction))) if len(cases) > 1 else 0
            keep = order[:n_val] if split == "val" else order[n_val:]
            cases = [cases[i] for i in sorted(keep)]
        self.cases, self.clip = cases, clip
        self.ids = [c.id for c in cases]
        self._all_cases = list(cases) if split is None else None
        self._root = Path(root)
        self._num_classes: int | None = len(self.meta.get("labels", {})) or None

    @property
    def num_classes(self) -> int:
        """Classes incl. background: the MSD ``labels`` table, else 1 + the largest label in the folder (read
        once; at least 2)."""
        if self._num_classes is None:
            cases = self._all_cases if self._all_cases is not None else volume_cases(self._root)[0]
            top = max(int(np.max(read_nifti(c.label)[0])) for c in cases)
            self._num_classes = max(2, top + 1)
        return self._num_classes

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
        case = self.cases[i]
        image, spacing = read_nifti(case.image)
        label, _ = read_nifti(case.label)
        if image.ndim == 3:
            image = image[None]
        if image.shape[1:] != label.shape:
            raise ValueError(f"{case.image}: image {image.shape[1:]} and label {case.label} {label.shape} "
                             "differ in size; they must match voxel for voxel")
        image = normalize_intensity(image, self.clip, None if self.clip else (0.5, 99.5))
        return image, label.astype(np.uint8), spacing


def sliding_window_predict(model, image, roi_size: Sequence[int], overlap: float = 0.5, sw_batch_size: int = 2,
                           mode: str = "gaussian"):
    """Logits of a whole (N, C, D, H, W) volume by overlapping windows.

    A torch tensor goes through MONAI's ``sliding_window_inference`` (on the tensor's device); a numpy array
    through :func:`edgeseg.common.sliding.sliding_window`, the same algorithm in numpy, with any predictor
    of numpy windows: a :class:`edgeseg.runtimes.Runtime` (an exported 3D artifact) or a callable.
    """
    if isinstance(image, np.ndarray):
        from edgeseg.common.sliding import sliding_window

        predict = getattr(model, "infer", model)
        return sliding_window(predict, image, roi_size, overlap=overlap, batch=sw_batch_size, mode=mode)
    inferers = require("monai.inferers", "sliding-window inference")
    import torch

    with torch.no_grad():
        return inferers.sliding_window_inference(image, roi_size=tuple(roi_size), sw_batch_size=sw_batch_size,
                                                 predictor=model, overlap=overlap, mode=mode)


def synthetic_volume(seed: int, size: int | Sequence[int] = 48, max_lesions: int = 2
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like phantom: (volume float32 (D, H, W) in Hounsfield-like units, label uint8 (D, H, W)).

    An ellipsoidal body (soft tissue ~40 HU, smooth texture) in air (-900), with 1..``max_lesions``
    ellipsoidal lesions (label 1) about 60-120 HU brighter than the tissue around them, plus noise.
    Deterministic by ``seed``; numpy only.
    """
    rng = np.random.default_rng(seed)
    shape = (size,) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
    axes = [np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    body = (z / 0.95) ** 2 + (y / 0.8) ** 2 + (x / 0.9) ** 2 < 1.0
    # smooth tissue texture: a few random low-frequency waves
    texture = np.zeros(shape, np.float32)
    for _ in range(4):
        f = rng.uniform(1.0, 4.0, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        texture += np.sin(f[0] * np.pi * z + ph[0]) * np.sin(f[1] * np.pi * y + ph[1]) * np.sin(f[2] * np.pi * x + ph[2])
    vol = np.where(body, 40.0 + 12.0 * texture, -900.0).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, max_lesions + 1))):
        c = rng.uniform(-0.45, 0.45, 3)
        r = rng.uniform(0.12, 0.28, 3)
        inside = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1.0
        inside &= body
        vol[inside] += rng.uniform(60.0, 120.0)
        label[inside] = 1
    vol += rng.normal(0.0, 15.0, shape).astype(np.float32)
    return vol, label


def write_synthetic_msd(root: str | Path, n: int, size: int | Sequence[int] = 48, seed: int = 0,
                        spacing: Sequence[float] = (1.5, 1.0, 1.0)) -> Path:
    """Write ``n`` :func:`synthetic_volume` cases as an MSD folder (``dataset.json``, ``imagesTr``,
    ``labelsTr``, NIfTI ``.nii.gz``) that :class:`MSDVolumes` reads; ``spacing`` is in (D, H, W) order."""
    nib = require("nibabel", "writing NIfTI volumes")
    from edgeseg.common.io import atomic_path, atomic_write_json

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*list(spacing)[::-1], 1.0])  # NIfTI (X, Y, Z) voxel sizes
    training = []
    for i in range(n):
        vol, lab = synthetic_volume(seed * 100_003 + i, size)
        name = f"phantom_{i:03d}.nii.gz"
        for sub, arr in (("imagesTr", vol), ("labelsTr", lab)):
            path = root / sub / name
            with atomic_path(path, suffix=".nii.gz") as tmp:
                nib.save(nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine), str(tmp))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    atomic_write_json(root / "dataset.json", {
        "name": "edgeseg-phantoms", "description": "synthetic CT-like phantoms (edgeseg.data.volumes)",
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "lesion"},
        "numTraining": n, "training": training,
    })
    return root

