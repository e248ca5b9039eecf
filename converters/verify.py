"""Parity of a converted artifact with the FP32 torch reference, measured through ``runtimes``.

Both sides are :class:`~edgeseg.runtimes.base.Runtime` runners (the reference is ``TorchRuntime.from_module``), fed
the same held-back, pre-processed images. Figures: max / mean absolute logit difference, mask agreement
(Dice between the thresholded masks, per image, then mean and minimum), pixel agreement, and, when the images
have ground truth, the Dice of each side against it. Tolerances depend on the precision: fp32 is held to the
logits, fp16 more loosely, int8 is judged on mask agreement only (its logits move by design).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeseg.runtimes.manifest import Postprocessing

from edgeseg.common.errors import first_line
from edgeseg.metrics import dice, mask_agreement

# max_abs_diff must stay under atol + rtol * max|reference logit|; mask agreement is a mean Dice.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"atol": 1e-3, "rtol": 1e-4, "mask_agreement": 0.99},
    "fp16": {"atol": 5e-2, "rtol": 1e-2, "mask_agreement": 0.98},
    "int8": {"mask_agreement": 0.90},
}


@dataclass
class Parity:
    """The comparison of one artifact with its FP32 reference.

    Attributes:
        figures: the measured numbers (see module docstring).
        tolerance: the limits applied.
        failures: one line per limit exceeded (empty when it passed).
    """

    figures: dict[str, Any]
    tolerance: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.figures,
            "tolerance": dict(self.tolerance),
            "passed": self.passed,
            "failures": list(self.failures),
        }

    def summary(self) -> str:
        f = self.figures
        if "max_abs_diff" not in f:  # nothing was measured (a refused artifact)
            return "FAILED: " + "; ".join(self.failures)
        text = (
            f"max|d|={f['max_abs_diff']:.3g} mean|d|={f['mean_abs_diff']:.3g} "
            f"agreement={f['mask_agreement']:.4f} (min {f['mask_agreement_min']:.4f})"
        )
        if f.get("reference_foreground") == 0.0:  # empty masks agree with anything empty: say so
            text += ("; note: the reference predicts no foreground on these inputs (untrained weights?), so the "
                     "agreement says little: the logit differences do")
        return text if self.passed else f"{text}; FAILED: {'; '.join(self.failures)}"


def masks_of(logits: np.ndarray, post: Postprocessing) -> np.ndarray:
    """Label maps (N, *spatial) from channels-first logits: threshold (binary) or argmax (multi-class)."""
    if logits.shape[1] == 1:
        thr = float(np.clip(post.threshold, 1e-6, 1 - 1e-6))
        return (logits[:, 0] > np.log(thr / (1 - thr))).astype(np.uint8)
    return np.argmax(logits, axis=1).astype(np.uint8)


def _agreement(a: np.ndarray, b: np.ndarray, classes: int) -> float:
    if classes <= 1:
        return mask_agreement(a, b)
    return float(np.mean([mask_agreement(a == c, b == c) for c in range(1, classes)]))


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    post: Postprocessing,
    precision: str,
    labels: np.ndarray | None = None,
) -> Parity:
    """Parity figures of ``candidate`` logits against ``reference`` logits (both channels-first float32)."""
    if reference.shape != candidate.shape:
        raise ValueError(
            f"reference logits {reference.shape} and candidate {candidate.shape} differ in shape"
        )
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    classes = max(int(reference.shape[1]), post.num_classes)
    ma, mb = masks_of(reference, post), masks_of(candidate, post)
    per_image = [_agreement(ma[i], mb[i], classes) for i in range(len(ma))]
    figures: dict[str, Any] = {
        "n_images": int(reference.shape[0]),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "reference_abs_max": float(np.abs(reference).max()),
        "mask_agreement": float(np.mean(per_image)),
        "mask_agreement_min": float(np.min(per_image)),
        "pixel_agreement": float(np.mean(ma == mb)),
        "reference_foreground": float(np.mean(ma > 0)),
    }
    if labels is not None:
        figures["labels_foreground"] = float(np.mean(labels > 0))
    if labels is not None and classes <= 1:
        figures["dice_reference"] = float(np.mean([dice(ma[i], labels[i]) for i in range(len(ma))]))
        figures["dice_candidate"] = float(np.mean([dice(mb[i], labels[i]) for i in range(len(mb))]))
    tol = dict(TOLERANCES[precision])
    failures = []
    for side, logits in (("reference", reference), ("candidate", candidate)):
        bad = int(np.size(logits) - np.count_nonzero(np.isfinite(logits)))
        if bad:  # NaN compares as "no difference" in max(): it must fail on its own
            figures[f"{side}_nonfinite"] = bad
            failures.append(f"the {side} gives {bad} NaN/inf logits: its outputs are not numbers")
    if "atol" in tol:
        limit = tol["atol"] + tol["rtol"] * figures["reference_abs_max"]
        tol["max_abs_diff"] = limit
        if figures["max_abs_diff"] > limit:
            failures.append(
                f"max abs logit difference {figures['max_abs_diff']:.3g} > {limit:.3g} "
                f"({figures['max_abs_diff'] / limit:.1f}x the {precision} tolerance)"
            )
    if figures["mask_agreement"] < tol["mask_agreement"]:
        failures.append(
            f"mask agreement {figures['mask_agreement']:.4f} < {tol['mask_agreement']} "
            f"(short by {tol['mask_agreement'] - figures['mask_agreement']:.4f})"
        )
    return Parity(figures=figures, tolerance=tol, failures=failures)


def run_artifact(artifact: Any, images: np.ndarray, precision: str, threads: int | None = None) -> tuple[Any, ...]:
    """(logits, manifest, runtime info) of a just-converted artifact on ``images``, through its own runtime.

    Raises:
        ValueError: the artifact does not run there (a delegate that cannot prepare the graph, ...), with the
            runtime's first line and what it means for the conversion.
    """
    from edgeseg import runtimes

    try:
        with runtimes.load(artifact, threads=threads) as rt:
            return rt.infer(np.ascontiguousarray(images, dtype=np.float32)), rt.manifest, rt.info()
    except (RuntimeError, ValueError) as exc:  # e.g. a delegate that cannot prepare the graph
        first = first_line(exc, 300)
        raise ValueError(
            f"the converted {precision} artifact does not run in its runtime ({first}); "
            "it was not kept (convert with --no-verify to keep it anyway)"
        ) from None


def verify_artifact(
    artifact: Any,
    model: Any,
    images: np.ndarray,
    precision: str,
    labels: np.ndarray | None = None,
    threads: int | None = None,
    reference: np.ndarray | None = None,
) -> Parity:
    """Run ``artifact`` (a path with its manifest beside it) and the FP32 ``model`` on ``images``; compare.

    Args:
        artifact: path of the converted model (its manifest must be beside it).
        model: the FP32 torch ``nn.Module`` it was converted from.
        images: float32 channels-first, normalised inputs (held back from calibration).
        precision: the artifact's precision (selects the tolerances).
        labels: ground-truth masks for the images, or None.
        threads: runtime threads (None: backend default).
        reference: the FP32 model's logits on ``images`` when already computed (else computed here).
    """
    from edgeseg.runtimes.torch_runtime import TorchRuntime

    candidate, manifest, info = run_artifact(artifact, images, precision, threads)
    if reference is None:
        ref_rt = TorchRuntime.from_module(model, manifest, threads=threads)
        try:
            reference = ref_rt.infer(np.ascontiguousarray(images, dtype=np.float32))
        finally:
            ref_rt.close()
    parity = compare(reference, candidate, manifest.postprocessing, precision, labels)
    parity.figures["runtime"] = info.get("runtime")
    parity.figures["runtime_version"] = info.get("version")
    parity.figures["reference"] = "torch fp32 (same weights)"
    return parity
