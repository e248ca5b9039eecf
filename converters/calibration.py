"""Calibration and verification images: an image folder (edgeseg.data loaders) or the synthetic generator.

Both sets go through the same pre-processing as inference (``edgeseg.runtimes.processing.preprocess`` with the
artifact's :class:`~edgeseg.runtimes.manifest.Preprocessing`), so int8 ranges are measured on what the device will
see. Verification images are held back: from a folder with train/val splits, calibration draws from
``train`` and verification from ``val``; from a folder without splits, a deterministic 10% is held out
(``edgeseg.data.sources.open_train_val``); synthetic sets use disjoint seeds. Every set records its
provenance (source, split, count, sha256 of the sorted id list).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.runtimes.manifest import Preprocessing

from edgeseg.common.errors import first_line

# 100, not 300: on ultralightunet-s the int8 Dice drops were as small with 100 (onnx +0.0019, openvino +0.0058,
# tflite -0.0065 on 16 held-back Kvasir images) and TFLite's PT2E calibration, ~0.1 s per image through the
# observed graph, fell from 55 to 36 s (docs/notes/issue-14.md, session 6)
DEFAULT_CALIB_SIZE = 100
MIN_RECOMMENDED = 100
DEFAULT_VERIFY_SIZE = 16
CALIB_SEED = 0
VERIFY_SEED = 424_242


@dataclass
class CalibrationSet:
    """Pre-processed images (and masks when the source has them) with their provenance.

    Attributes:
        images: float32 (N, C, *spatial), channels-first and normalised.
        labels: uint8 (N, *spatial) ground-truth masks, or None.
        provenance: source, split, count, sha256 of the id list, role, pre-processing.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch: int = 1):
        """Yield float32 batches of at most ``batch`` images."""
        for i in range(0, len(self), batch):
            yield self.images[i : i + batch]


def _hash_ids(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def _is_synthetic(source: str) -> bool:
    return source == "synthetic" or source.startswith("synthetic:")


def _pick(n_have: int, n_want: int, seed: int) -> list[int]:
    order = np.random.default_rng(seed).permutation(n_have)
    return sorted(order[: min(n_want, n_have)].tolist())


def _prep(frames: list[np.ndarray], pre: Preprocessing) -> np.ndarray:
    from edgeseg.runtimes.processing import preprocess

    batch, _ = preprocess(frames, pre)
    return batch


def _resize_masks(masks: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    from edgeseg.data.folder import resize_pair

    out = []
    for m in masks:
        dummy = np.zeros((*m.shape[:2], 3), np.uint8)
        _, r = resize_pair(dummy, m.astype(np.uint8), size)
        out.append(r)
    return np.stack(out).astype(np.uint8)


def check_source(source: str | Path) -> None:
    """Fail early (before any model is built) when ``source`` cannot supply images.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: not a folder, or no image/mask pairs in it.
    """
    source = str(source)
    if _is_synthetic(source):
        return
    from edgeseg.data.folder import find_pairs

    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"calibration folder not found: {root} (pass an image folder or 'synthetic')")
    if not root.is_dir():
        raise ValueError(f"--calib must be an image folder or 'synthetic', got the file {root}")
    try:
        pairs = find_pairs(root)
    except (ValueError, FileNotFoundError) as exc:
        raise ValueError(f"no usable calibration images in {root}: {first_line(exc)}") from None
    if not pairs:
        raise ValueError(f"no usable calibration images in {root}")


def load_images(
    source: str | Path,
    n: int,
    preprocessing: Preprocessing,
    role: str = "calibration",
    in_channels: int = 3,
) -> CalibrationSet:
    """Load ``n`` pre-processed images for calibration or verification.

    Args:
        source: an image folder (``images/`` + ``masks/``, or any layout ``edgeseg.data`` reads) or
            ``"synthetic"``.
        n: how many images (fewer when the folder has fewer).
        preprocessing: the artifact's pre-processing (size, resize, mean/std, colour).
        role: "calibration" (train split / non-held-out part) or "verification" (val split / held-out part).
        in_channels: the model's input channels.

    Returns:
        A :class:`CalibrationSet`.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no usable images, a 3D model (no volume calibration source yet), or a bad role.
    """
    if role not in ("calibration", "verification"):
        raise ValueError(f"role must be 'calibration' or 'verification', got {role!r}")
    if n < 1:
        raise ValueError(f"--calib-size must be >= 1, got {n}")
    size = tuple(int(s) for s in preprocessing.size)
    if len(size) != 2:
        raise ValueError(
            f"image calibration is 2D; this model takes {len(size)}D input {list(size)}: "
            "use --int8-scheme dynamic (or fp32/fp16) for 3D models"
        )
    source = str(source)
    if _is_synthetic(source):
        from edgeseg.common.phantoms import SyntheticPolypDataset

        seed = CALIB_SEED if role == "calibration" else VERIFY_SEED
        ds = SyntheticPolypDataset(n, size=size, seed=seed)
        pairs = [ds[i] for i in range(len(ds))]
        ids = list(ds.ids)
        prov = {"source": "synthetic", "split": None, "seed": seed}
    else:
        from edgeseg.data.sources import open_train_val

        root = Path(source)
        check_source(root)
        try:
            train, val, tspec, vspec = open_train_val(str(root), None, size[0], color=preprocessing.color)
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"no usable calibration images in {root}: {first_line(exc)}") from None
        ds, spec = (train, tspec) if role == "calibration" else (val, vspec)
        if len(ds) == 0:
            raise ValueError(f"no usable {role} images in {root} (split {spec.split!r} is empty)")
        idx = _pick(len(ds), n, CALIB_SEED if role == "calibration" else VERIFY_SEED)
        # keep the files' own size: the inference pre-processing does the resizing
        pairs = [ds.load(i, resize=False) for i in idx]
        ids = [ds.ids[i] for i in idx]
        prov = {"source": str(root.resolve()), "split": spec.split}
    images = _prep([p[0] for p in pairs], preprocessing)
    if images.shape[1] != in_channels:
        raise ValueError(f"{source}: images have {images.shape[1]} channels, the model takes {in_channels}")
    labels = _resize_masks([p[1] for p in pairs], size) if pairs and pairs[0][1] is not None else None
    prov.update(
        role=role,
        count=len(ids),
        requested=n,
        ids_sha256=_hash_ids(ids),
        preprocessing={
            "size": list(size),
            "resize": preprocessing.resize,
            "mean": list(preprocessing.mean),
            "std": list(preprocessing.std),
        },
    )
    if role == "calibration" and len(ids) < MIN_RECOMMENDED:
        warnings.warn(
            f"calibrating int8 on only {len(ids)} images (fewer than {MIN_RECOMMENDED}); "
            "ranges may not cover real data: pass a larger --calib-size or folder",
            stacklevel=2,
        )
    return CalibrationSet(images=images, labels=labels, provenance=prov)


def random_inputs(n: int, shape: list[int], seed: int = VERIFY_SEED) -> CalibrationSet:
    """Seeded standard-normal inputs (for volumes, where no image source applies)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, *shape)).astype(np.float32)
    return CalibrationSet(
        images=images,
        provenance={"source": "random-normal", "seed": seed, "count": n, "role": "verification"},
    )


def volume_phantoms(n: int, preprocessing: Preprocessing, in_channels: int = 1, seed: int = VERIFY_SEED
                    ) -> CalibrationSet:
    """``n`` verification patches of a 3D model, with foreground: CT-like phantoms
    (:func:`edgeseg.data.volumes.synthetic_volume`, 1.5 patches on a side as in training) normalised as the
    artifact's manifest says (:func:`edgeseg.runtimes.processing.preprocess_volume`), each cropped to the patch
    size around a lesion voxel, with its labels. Random noise would not do: a model predicts no foreground on
    it, so any artifact agrees with the reference.

    Raises:
        ValueError: ``n`` < 1 or a 2D pre-processing.
    """
    from edgeseg.runtimes.processing import preprocess_volume

    from edgeseg.data.volumes import synthetic_volume

    if n < 1:
        raise ValueError(f"--verify-size must be >= 1, got {n}")
    if not preprocessing.volume:
        raise ValueError(f"volume phantoms are 3D; this pre-processing is {len(preprocessing.size)}D")
    patch = np.asarray(preprocessing.size, int)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        vol, lab = synthetic_volume(seed * 100_003 + i, tuple(int(p + p // 2) for p in patch))
        x = preprocess_volume(np.repeat(vol[None], in_channels, axis=0), preprocessing)[0]
        fg = np.argwhere(lab > 0)
        centre = fg[rng.integers(len(fg))] if len(fg) else np.asarray(lab.shape) // 2
        start = np.clip(centre - patch // 2, 0, np.asarray(lab.shape) - patch)
        sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, patch))
        images.append(x[(slice(None), *sl)])
        labels.append(lab[sl])
    lab_arr = np.stack(labels).astype(np.uint8)
    pre = {k: getattr(preprocessing, k) for k in ("size", "intensity_clip", "percentiles", "zscore")}
    return CalibrationSet(
        images=np.ascontiguousarray(np.stack(images), dtype=np.float32),
        labels=lab_arr,
        provenance={"source": "synthetic-volumes", "seed": seed, "count": n, "role": "verification",
                    "foreground": round(float((lab_arr > 0).mean()), 4), "preprocessing": pre},
    )
