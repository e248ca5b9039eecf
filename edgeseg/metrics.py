"""Segmentation metrics on numpy arrays, shared by training, evaluation, conversion checks and benchmarks.

Every metric takes boolean (or 0/1) masks of the same shape, one case at a time. Empty masks are handled
explicitly: when both prediction and ground truth are empty the overlap metrics are 1.0 (a correct "no
polyp" answer) and HD95 is 0.0; when exactly one is empty, Dice/IoU/recall/precision are 0.0 where defined
and HD95 is ``inf`` (no surface to measure a distance to). Torch-free.
"""

from __future__ import annotations

import numpy as np


def _as_bool(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred).astype(bool), np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from target shape {t.shape}")
    return p, t


def confusion(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of two binary masks."""
    p, t = _as_bool(pred, target)
    tp = int(np.count_nonzero(p & t))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice = 2|P&T| / (|P| + |T|); 1.0 when both are empty."""
    tp, fp, fn = confusion(pred, target)
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2 * tp / denom


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Jaccard = |P&T| / |P|T|; 1.0 when both are empty."""
    tp, fp, fn = confusion(pred, target)
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def recall(pred: np.ndarray, target: np.ndarray) -> float:
    """TP / (TP + FN); 1.0 when the target is empty and nothing was predicted, 0.0 if something was."""
    tp, fp, fn = confusion(pred, target)
    if tp + fn == 0:
        return 1.0 if fp == 0 else 0.0
    return tp / (tp + fn)


def precision(pred: np.ndarray, target: np.ndarray) -> float:
    """TP / (TP + FP); 1.0 when nothing was predicted and the target is empty, 0.0 if it is not."""
    tp, fp, fn = confusion(pred, target)
    if tp + fp == 0:
        return 1.0 if fn == 0 else 0.0
    return tp / (tp + fp)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def hd95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """95th percentile symmetric Hausdorff distance between mask surfaces, in pixels (or ``spacing`` units).

    0.0 when both masks are empty, ``inf`` when exactly one is.
    """
    from scipy import ndimage

    p, t = _as_bool(pred, target)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("inf")
    sp, st = _surface(p), _surface(t)
    dt_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    dists = np.concatenate([dt_t[sp], dt_p[st]])
    return float(np.percentile(dists, 95))


def mask_agreement(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice between two predicted masks (candidate vs reference): the fidelity figure of a conversion."""
    return dice(mask_a, mask_b)


def all_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Dice, IoU, recall, precision and HD95 of one case."""
    return {
        "dice": dice(pred, target),
        "iou": iou(pred, target),
        "recall": recall(pred, target),
        "precision": precision(pred, target),
        "hd95": hd95(pred, target),
    }
