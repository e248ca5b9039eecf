"""Resolve a ``--data`` argument (a folder or ``synthetic``) into train/val datasets (torch-free).

Rules, in order:

- ``synthetic`` (or ``synthetic:N``): generated phantoms; validation uses a fixed seed disjoint from training.
- a folder with a ``train`` split (``train.txt`` or ``train/``): that split for training, its ``val`` split
  for validation when there is one;
- any other folder: every pair, with a deterministic 10% held out for validation when no ``--val`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.common.phantoms import SyntheticPolypDataset
from edgeseg.data.folder import SegmentationFolder, find_pairs

SYNTHETIC_TRAIN = 400
SYNTHETIC_VAL = 80
SYNTHETIC_VAL_SEED = 987_654
HOLDOUT = 0.1


class Subset:
    """Some indices of a dataset, with its ``load`` / ``ids`` interface."""

    def __init__(self, base, indices):
        self.base, self.indices = base, list(indices)
        self.ids = [base.ids[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int, resize: bool = True):
        return self.base.load(self.indices[i], resize)

    def __getitem__(self, i: int):
        return self.load(i)


class SyntheticSource:
    """A :class:`SyntheticPolypDataset` with the folder datasets' ``load`` / ``ids`` interface."""

    def __init__(self, n: int, size: int, seed: int):
        self.ds = SyntheticPolypDataset(n, size, seed)
        self.ids = self.ds.ids

    def __len__(self) -> int:
        return len(self.ds)

    def load(self, i: int, resize: bool = True):
        return self.ds[i]

    def __getitem__(self, i: int):
        return self.ds[i]


@dataclass
class DataSpec:
    """What was used, for the checkpoint's recipe."""

    source: str
    split: str | None
    n: int

    def to_dict(self) -> dict:
        return {"source": self.source, "split": self.split, "n": self.n}


def _is_synthetic(spec: str) -> bool:
    return spec == "synthetic" or spec.startswith("synthetic:")


def _synthetic_n(spec: str, default: int) -> int:
    if ":" not in spec:
        return default
    try:
        return int(spec.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"bad synthetic data spec {spec!r}; use 'synthetic' or 'synthetic:N'") from None


def _has_split(root: Path, split: str) -> bool:
    return (root / f"{split}.txt").is_file() or (root / split).is_dir()


def open_split(spec: str, split: str | None, size: int, mask_mode: str = "binary", color: str = "rgb",
               seed: int = 0):
    """One dataset for evaluation: ``split`` of a folder (None: every pair), or synthetic validation data."""
    if _is_synthetic(spec):
        n = _synthetic_n(spec, SYNTHETIC_VAL)
        s = SYNTHETIC_VAL_SEED if split in (None, "val", "test") else seed
        return SyntheticSource(n, size, s)
    root = Path(spec)
    if split is not None and not _has_split(root, split):
        find_pairs(root, split)  # raises the helpful "split not found" error
    return SegmentationFolder(root, split, mask_mode=mask_mode, color=color, size=(size, size))


def open_train_val(data: str, val: str | None, size: int, mask_mode: str = "binary", color: str = "rgb",
                   seed: int = 0, synthetic_train: int = SYNTHETIC_TRAIN, synthetic_val: int = SYNTHETIC_VAL):
    """(train dataset, val dataset, train DataSpec, val DataSpec) for ``--data`` / ``--val``."""
    if _is_synthetic(data):
        n_train = _synthetic_n(data, synthetic_train)
        train = SyntheticSource(n_train, size, seed)
        tspec = DataSpec(data, None, n_train)
    else:
        root = Path(data)
        split = "train" if root.is_dir() and _has_split(root, "train") else None
        train = SegmentationFolder(root, split, mask_mode=mask_mode, color=color, size=(size, size))
        tspec = DataSpec(str(root), split, len(train))
    if val is not None:
        if _is_synthetic(val):
            vds, vsplit = SyntheticSource(_synthetic_n(val, synthetic_val), size, SYNTHETIC_VAL_SEED), None
        else:
            vsplit = "val" if _has_split(Path(val), "val") else None
            vds = SegmentationFolder(val, vsplit, mask_mode=mask_mode, color=color, size=(size, size))
        return train, vds, tspec, DataSpec(val, vsplit, len(vds))
    if _is_synthetic(data):
        vds = SyntheticSource(synthetic_val, size, SYNTHETIC_VAL_SEED)
        return train, vds, tspec, DataSpec("synthetic", None, synthetic_val)
    root = Path(data)
    if tspec.split == "train" and _has_split(root, "val"):
        vds = SegmentationFolder(root, "val", mask_mode=mask_mode, color=color, size=(size, size))
        return train, vds, tspec, DataSpec(str(root), "val", len(vds))
    # no validation split: hold out a deterministic 10%
    n = len(train)
    if n < 2:
        raise ValueError(f"{root} has {n} pair(s): too few to hold out validation data; pass --val PATH")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * HOLDOUT)))
    vidx, tidx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    return (Subset(train, tidx), Subset(train, vidx), DataSpec(str(root), f"holdout-train-{seed}", len(tidx)),
            DataSpec(str(root), f"holdout-val-{seed}", len(vidx)))
