"""The benchmark split as arrays: normalised inputs (N, C, H, W) float32 and boolean masks (N, H, W).

``--data`` is a dataset folder (Kvasir-SEG layout or any image/mask folder, read by ``edgeseg.data``) or
``synthetic`` / ``synthetic:N`` (generated polyp phantoms, a fixed validation seed). Every row of a run
sees exactly these arrays, so accuracy and fidelity are over the same cases. (int8 calibration images are
read by the converters from the *training* split of the same ``--data``, never from the benchmark split.)
Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Cases:
    """A benchmark split in memory.

    Attributes:
        inputs: (N, C, H, W) float32, normalised with the model's mean/std.
        masks: (N, H, W) bool labels.
        ids: case ids.
        source: the ``--data`` value.
        split: the split name (None: every pair / synthetic validation seed).
    """

    inputs: np.ndarray
    masks: np.ndarray
    ids: list[str]
    source: str
    split: str | None

    def __len__(self) -> int:
        return len(self.ids)


def _open(data: str, split: str | None, img_size: int, in_channels: int):
    from edgeseg.data.sources import open_split

    color = "gray" if in_channels == 1 else "rgb"
    return open_split(str(data), split, img_size, mask_mode="binary", color=color)


def _stack(ds, idx: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    from edgeseg.data.transforms import normalize

    xs, ms = [], []
    for i in idx:
        image, mask = ds.load(i)
        xs.append(normalize(image, mean, std))
        ms.append(np.asarray(mask) > 0)
    return np.stack(xs).astype(np.float32), np.stack(ms)


def load_cases(
    data: str,
    split: str | None,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int = 3,
    limit: int | None = None,
) -> Cases:
    """Read the benchmark split.

    Args:
        data: a dataset folder or ``synthetic`` / ``synthetic:N``.
        split: split name ("val", "test", ...) or None for every pair.
        img_size: square input size the images and masks are resized to.
        mean: normalisation mean (0-1 scale), from the model config.
        std: normalisation std.
        in_channels: 3 (RGB) or 1 (grey).
        limit: keep only the first ``limit`` cases (quick runs).

    Raises:
        FileNotFoundError / ValueError: from ``edgeseg.data`` for a missing folder or split.
        ValueError: the split is empty.
    """
    ds = _open(data, split, img_size, in_channels)
    n = len(ds) if limit is None else min(len(ds), int(limit))
    if n < 1:
        raise ValueError(f"the benchmark split {split!r} of {data} has no cases; pass --data/--split with data")
    inputs, masks = _stack(ds, range(n), mean, std)
    return Cases(inputs=inputs, masks=masks, ids=list(ds.ids[:n]), source=str(data), split=split)
