"""Evaluation of a torch model on (image, mask) pairs with the seed papers' metrics, per case and mean.

The model sees each image resized to the checkpoint's pre-processing size; its logits are resized back to the
mask's own size, so metrics are computed at the resolution of the ground truth. Binary models threshold
the sigmoid at 0.5; multi-class models take the argmax and average each metric over foreground classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeseg import metrics as M
from edgeseg.data.folder import resize_pair
from edgeseg.data.transforms import normalize

METRICS = ("dice", "iou", "recall", "precision", "hd95")


@dataclass
class EvalResult:
    """Per-case metrics and their means.

    Attributes:
        ids: case ids.
        per_case: one dict of metric -> value per case.
        mean: mean over cases; ``hd95`` is the mean over cases where it is defined (finite) and
            ``hd95_undefined`` counts the cases where exactly one of prediction/target is empty.
    """

    ids: list[str]
    per_case: list[dict[str, float]]
    mean: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.per_case)

    def summary(self) -> dict[str, Any]:
        return {**self.mean, "n": self.n}

    def to_csv(self) -> str:
        lines = ["id," + ",".join(METRICS)]
        for cid, row in zip(self.ids, self.per_case):
            lines.append(cid + "," + ",".join(f"{row[m]:.6g}" for m in METRICS))
        return "\n".join(lines) + "\n"


def case_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int = 1) -> dict[str, float]:
    """Metrics of one case; multi-class label maps average each metric over the foreground classes."""
    if num_classes == 1:
        return M.all_metrics(pred.astype(bool), target.astype(bool))
    rows = [M.all_metrics(pred == c, target == c) for c in range(1, num_classes)]
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS}


def summarise(ids: Sequence[str], per_case: list[dict[str, float]]) -> EvalResult:
    """Means over cases (see :class:`EvalResult` for the HD95 rule)."""
    mean: dict[str, float] = {}
    for k in METRICS:
        vals = [r[k] for r in per_case if math.isfinite(r[k])]
        mean[k] = float(np.mean(vals)) if vals else float("nan")
    mean["hd95_undefined"] = sum(1 for r in per_case if not math.isfinite(r["hd95"]))
    return EvalResult(list(ids), per_case, mean)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, batch: torch.Tensor, device: torch.device | str = "cpu",
                   channels_last: bool = False) -> torch.Tensor:
    """Logits of a normalised (N, C, H, W) batch, on CPU, float32."""
    x = batch.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", enabled=str(device).startswith("cuda")):
        out = model(x)
    return out.float().cpu()


def logits_to_mask(logits: torch.Tensor, size: tuple[int, int] | None = None, threshold: float = 0.5
                   ) -> np.ndarray:
    """(C, H, W) logits -> uint8 label mask, optionally resized (bilinear on logits) to ``size``."""
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    if logits.shape[0] == 1:
        return (torch.sigmoid(logits[0]) > threshold).numpy().astype(np.uint8)
    return logits.argmax(0).numpy().astype(np.uint8)


def evaluate_pairs(model: torch.nn.Module, pairs, preprocessing: dict[str, Any], num_classes: int = 1,
                   batch_size: int = 8, device: torch.device | str = "cpu", ids: Sequence[str] | None = None,
                   channels_last: bool = False, progress=None) -> EvalResult:
    """Evaluate ``model`` on a sequence of (image uint8, mask uint8) pairs.

    Args:
        model: the network (put in eval mode here).
        pairs: indexable of (image, mask) at any size; ``len(pairs)`` cases.
        preprocessing: the checkpoint's pre-processing (size, mean, std, color).
        num_classes: 1 for binary logits, K for K-class logits.
        batch_size: images per forward pass.
        device: torch device.
        ids: case ids (default: their index).
        channels_last: feed channels_last inputs.
        progress: optional callable(n_done) for a progress display.
    """
    was_training = model.training
    model.eval()
    size = tuple(preprocessing["size"])
    per_case: list[dict[str, float]] = []
    n = len(pairs)
    any_foreground = False
    try:
        for start in range(0, n, batch_size):
            chunk = [pairs[i] for i in range(start, min(n, start + batch_size))]
            xs = [normalize(resize_pair(img, None, size)[0], preprocessing["mean"], preprocessing["std"])
                  for img, _ in chunk]
            logits = predict_logits(model, torch.from_numpy(np.stack(xs)), device, channels_last)
            for (_, mask), lg in zip(chunk, logits):
                pred = logits_to_mask(lg, mask.shape[:2])
                per_case.append(case_metrics(pred, mask, num_classes))
                any_foreground = any_foreground or bool(np.any(mask))
            if progress is not None:
                progress(len(per_case))
    finally:
        model.train(was_training)
    if n and not any_foreground:
        from edgeseg.data.folder import warn_if_no_foreground

        warn_if_no_foreground(np.zeros(1, np.uint8), f"the {n} evaluated masks")
    return summarise(ids if ids is not None else [str(i) for i in range(n)], per_case)
