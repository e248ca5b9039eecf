"""The numbers of a benchmark row: latency statistics, accuracy against labels, fidelity against the reference.

Everything here is plain numpy on arrays already in memory, so it is tested on tiny fake inputs and shared
by the in-process and the subprocess harness. Torch-free.

Conventions:
    - latency samples are per-inference wall times in milliseconds (``time.perf_counter``); percentiles use
      numpy's default linear interpolation; ``std`` is the population standard deviation; ``fps`` is
      ``1000 / mean`` for batch 1 (throughput of back-to-back calls, not of a pipelined stream);
    - accuracy (Dice, IoU, recall, precision) is the mean over cases of the per-case figure, the "mDice"
      of the polyp literature; empty-vs-empty counts as 1.0 (see ``edgeseg.metrics``);
    - fidelity compares a candidate's logits with the FP32 torch reference's on the same inputs: mask
      agreement (Dice between the two thresholded masks, mean and worst case), max and mean absolute logit
      difference, and the PSNR of the probability maps (peak 1.0), capped at :data:`PSNR_CAP_DB` when the
      maps are identical to float32 resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeseg import metrics

PSNR_CAP_DB = 200.0  # PSNR reported for identical probability maps (MSE 0)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """Summary of per-inference latencies.

    Args:
        samples_ms: one wall time per inference, in milliseconds, warm-up excluded.

    Returns:
        ``{"p50", "p90", "p99", "mean", "std", "min", "max", "n"}`` in ms (``n`` is the sample count).

    Raises:
        ValueError: no samples, or a negative / non-finite sample.

    Examples:
        >>> latency_stats([10.0, 12.0, 11.0])["p50"]
        11.0
    """
    a = np.asarray(samples_ms, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("no latency samples: run at least one timed iteration (--iters >= 1)")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("latency samples must be finite and non-negative")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def fps(mean_ms: float, batch: int = 1) -> float:
    """Inferences (images) per second from a mean latency per call."""
    if mean_ms <= 0:
        raise ValueError(f"mean latency must be positive, got {mean_ms}")
    return 1000.0 * batch / mean_ms


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function in float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def probabilities(logits: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """Probability maps from logits (N, C, *spatial): sigmoid, or softmax over the channel axis."""
    if activation == "sigmoid":
        return sigmoid(logits)
    if activation == "softmax":
        x = np.asarray(logits, dtype=np.float64)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


def masks_from_logits(logits: np.ndarray, activation: str = "sigmoid", threshold: float = 0.5) -> np.ndarray:
    """Foreground masks (N, *spatial) from logits (N, C, *spatial).

    Binary models (one channel, sigmoid) threshold the probability; multi-class models (softmax) take the
    arg-max and call every non-background class foreground.
    """
    logits = np.asarray(logits)
    if logits.ndim < 3:
        raise ValueError(f"logits must be (N, C, *spatial), got shape {list(logits.shape)}")
    if activation == "sigmoid":
        if logits.shape[1] != 1:
            raise ValueError(f"sigmoid models have one output channel, got {logits.shape[1]}")
        # sigmoid(x) > t  <=>  x > logit(t): no need to compute probabilities
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        return logits[:, 0] > math.log(threshold / (1.0 - threshold))
    if activation == "softmax":
        return np.argmax(logits, axis=1) > 0
    raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


def psnr(prob_a: np.ndarray, prob_b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two probability maps (peak 1.0); :data:`PSNR_CAP_DB` when they are identical."""
    a, b = np.asarray(prob_a, dtype=np.float64), np.asarray(prob_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"probability maps differ in shape: {list(a.shape)} vs {list(b.shape)}")
    mse = float(np.mean((a - b) ** 2)) if a.size else 0.0
    if mse <= 0.0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * math.log10(peak * peak / mse)))


def accuracy(pred_masks: np.ndarray, target_masks: np.ndarray) -> dict[str, Any]:
    """Mean Dice, IoU, recall and precision over cases, plus the per-case Dice list.

    Args:
        pred_masks: (N, *spatial) boolean predictions.
        target_masks: (N, *spatial) boolean labels.

    Returns:
        ``{"dice", "iou", "recall", "seg_precision", "dice_per_case"}`` (``seg_precision`` is the pixel
        precision, named so that it does not collide with a row's numeric ``precision``).
    """
    pred_masks, target_masks = np.asarray(pred_masks), np.asarray(target_masks)
    if pred_masks.shape != target_masks.shape:
        raise ValueError(f"{len(pred_masks)} predictions of shape {list(pred_masks.shape[1:])} do not match "
                         f"{len(target_masks)} labels of shape {list(target_masks.shape[1:])}")
    if len(pred_masks) == 0:
        raise ValueError("no cases to score")
    per = {"dice": [], "iou": [], "recall": [], "seg_precision": []}
    for p, t in zip(pred_masks, target_masks):
        per["dice"].append(metrics.dice(p, t))
        per["iou"].append(metrics.iou(p, t))
        per["recall"].append(metrics.recall(p, t))
        per["seg_precision"].append(metrics.precision(p, t))
    out: dict[str, Any] = {k: float(np.mean(v)) for k, v in per.items()}
    out["dice_per_case"] = [float(v) for v in per["dice"]]
    return out


def fidelity(
    logits: np.ndarray,
    ref_logits: np.ndarray,
    activation: str = "sigmoid",
    threshold: float = 0.5,
) -> dict[str, float]:
    """How closely a candidate reproduces the reference on the same inputs.

    Args:
        logits: candidate logits (N, C, *spatial).
        ref_logits: reference (FP32 torch) logits of the same shape.
        activation: the model's output activation ("sigmoid" or "softmax").
        threshold: the probability threshold of binary masks.

    Returns:
        ``{"agreement", "agreement_min", "max_abs_diff", "mean_abs_diff", "psnr_db"}``: agreement is the
        mean over cases of the Dice between candidate and reference masks; ``agreement_min`` the worst case;
        PSNR is over all probability values of all cases.
    """
    a = np.asarray(logits, dtype=np.float32)
    r = np.asarray(ref_logits, dtype=np.float32)
    if a.shape != r.shape:
        raise ValueError(f"candidate logits {list(a.shape)} and reference logits {list(r.shape)} differ in shape")
    if not np.all(np.isfinite(a)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        return {"agreement": 0.0, "agreement_min": 0.0, "max_abs_diff": float("nan"),
                "mean_abs_diff": float("nan"), "psnr_db": 0.0, "non_finite": bad}
    ma = masks_from_logits(a, activation, threshold)
    mr = masks_from_logits(r, activation, threshold)
    agree = [metrics.mask_agreement(x, y) for x, y in zip(ma, mr)]
    diff = np.abs(a.astype(np.float64) - r)
    return {
        "agreement": float(np.mean(agree)),
        "agreement_min": float(np.min(agree)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "psnr_db": psnr(probabilities(a, activation), probabilities(r, activation)),
    }


def speedup(reference_ms: float | None, candidate_ms: float | None) -> float | None:
    """Reference latency over candidate latency (> 1: the candidate is faster); None when unknown."""
    if not reference_ms or not candidate_ms:
        return None
    return float(reference_ms) / float(candidate_ms)


def pareto_front(points: Sequence[tuple[float, float]], tol: float = 1e-4) -> list[int]:
    """Indices of the points not dominated for (lower latency, higher Dice), sorted by latency.

    A point dominates another when it is no slower and no less accurate, and strictly better in one. A Dice
    gain of ``tol`` or less does not count (float noise would otherwise keep a slower twin on the front).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best + tol:
            front.append(i)
            best = points[i][1]
    return front
