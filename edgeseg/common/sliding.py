"""Sliding-window inference over whole volumes (or images) with any predictor, in numpy (torch-free).

The algorithm is MONAI's ``sliding_window_inference`` (the one training validates with): windows of
``roi_size`` every ``int(roi * (1 - overlap))`` voxels, the last one flush with the border; inputs smaller
than a window are zero-padded (half before, half after) and the padding cropped again; overlapping
predictions are blended with a Gaussian importance map (sigma = 0.125 x window, floored at 1e-3) or
uniformly. A test keeps it equal to MONAI's to float rounding.

The predictor takes a float32 (B, C, *roi_size) batch and returns (B, K, *roi_size) logits: a
:class:`edgeseg.runtimes.Runtime`'s ``infer`` (an ONNX / OpenVINO / LiteRT artifact of a fixed window size),
or any callable. The device side uses it without torch (``edgeseg predict`` of a NIfTI volume).

Examples:
    >>> from edgeseg import runtimes
    >>> with runtimes.load("exports/ultralightunet3d-s_fp32.onnx") as rt:
    ...     logits = sliding_window(rt.infer, volume[None], window_of(rt.manifest), overlap=0.25)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BLEND_MODES = ("gaussian", "constant")


def importance_map(roi_size: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """The per-voxel weight of one window's prediction (MONAI's ``compute_importance_map``), float32."""
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
    if mode == "constant":
        return np.ones(tuple(roi_size), np.float32)
    weights = np.ones((), np.float32)
    for size in roi_size:
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x**2 / np.float32(-2 * (size * sigma_scale) ** 2)).astype(np.float32)
        weights = weights[..., None] * g
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def window_starts(size: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Start offsets of the windows along each axis (``size`` >= ``roi_size``), the last window at the border."""
    starts = []
    for n, r in zip(size, roi_size):
        step = r if r == n else max(1, int(r * (1 - overlap)))
        count = next((k for k in range(math.ceil(n / step)) if k * step + r >= n), 0) + 1
        starts.append([min(k * step, n - r) for k in range(count)])
    return starts


def sliding_window(
    predict: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    roi_size: Sequence[int],
    overlap: float = 0.25,
    batch: int = 1,
    mode: str = "gaussian",
) -> np.ndarray:
    """Logits of whole (N, C, *spatial) ``inputs`` from ``predict`` run on overlapping windows.

    Args:
        predict: float32 (B, C, *roi_size) -> (B, K, *roi_size) logits.
        inputs: float32 (N, C, *spatial), normalised as the model expects.
        roi_size: the window (the model's fixed input size).
        overlap: share of a window that the next one overlaps, in [0, 1).
        batch: windows per ``predict`` call.
        mode: "gaussian" (centre-weighted blending, MONAI's validation default here) or "constant".

    Returns:
        float32 (N, K, *spatial).

    Raises:
        ValueError: a window of another rank than the input, an overlap outside [0, 1), or a predictor whose
            output is not (B, K, *roi_size).
    """
    x = np.asarray(inputs, dtype=np.float32)
    roi = tuple(int(r) for r in roi_size)
    dims = x.ndim - 2
    if len(roi) != dims or dims < 1:
        raise ValueError(f"a {len(roi)}D window for input of shape {list(x.shape)}: give (N, C, *spatial) "
                         f"with {len(roi)} spatial axes")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    spatial = x.shape[2:]
    pad = [(max(r - s, 0) // 2, max(r - s, 0) - max(r - s, 0) // 2) for r, s in zip(roi, spatial)]
    if any(p for pair in pad for p in pair):
        x = np.pad(x, [(0, 0), (0, 0), *pad])
    size = x.shape[2:]
    corners = list(itertools.product(*window_starts(size, roi, overlap)))
    weight = importance_map(roi, mode)
    out: np.ndarray | None = None
    count = np.zeros(size, np.float32)
    for start in corners:
        count[tuple(slice(s, s + r) for s, r in zip(start, roi))] += weight
    jobs = [(n, start) for n in range(x.shape[0]) for start in corners]
    for k in range(0, len(jobs), batch):
        chunk = jobs[k : k + batch]
        windows = [x[(n, slice(None), *(slice(s, s + r) for s, r in zip(start, roi)))] for n, start in chunk]
        y = np.asarray(predict(np.ascontiguousarray(np.stack(windows))), dtype=np.float32)
        if y.ndim != dims + 2 or y.shape[0] != len(chunk) or tuple(y.shape[2:]) != roi:
            raise ValueError(f"the predictor returned shape {list(y.shape)} for {len(chunk)} window(s) of "
                             f"{list(roi)}; it must return (B, K, {', '.join(map(str, roi))})")
        if out is None:
            out = np.zeros((x.shape[0], y.shape[1], *size), np.float32)
        for (n, start), logits in zip(chunk, y):
            out[(n, slice(None), *(slice(s, s + r) for s, r in zip(start, roi)))] += logits * weight
    assert out is not None  # at least one window always exists
    out /= count
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pad, spatial))
    return np.ascontiguousarray(out[(slice(None), slice(None), *crop)])


def window_of(manifest: Any) -> tuple[int, ...]:
    """The window a runtime's artifact takes: its input's fixed spatial shape, else the manifest's size."""
    shape = manifest.input.nchw_shape()[2:]
    if all(isinstance(d, int) and d > 0 for d in shape):
        return tuple(int(d) for d in shape)
    return tuple(int(d) for d in manifest.preprocessing.size)
