"""The int8 accuracy budget, the same on every backend: keep the most sensitive layers in float until the Dice
drop against the FP32 model is within ``max_drop``.

The held-back images are split in two disjoint parts: *search* (the budget is tested on it) and *confirm*
(the chosen artifact is measured once more on it, and a miss is reported as such).

1. Quantize everything; measure the drop on the search part. Within budget: done.
2. Otherwise rank the layers by the damage each adds in that artifact (:func:`edgeseg.converters.layerwise.
   explain`, through the backend's own kernels) and keep the top k in float, k = 1, 2, 4, 8, ... until the
   drop is within budget; then bisect k downwards (fewer float layers run faster), within ``max_trials``.
3. Confirm on the other part. The record (every trial: the layers kept in float, the drop, the agreement,
   the seconds) goes into the manifest; when the budget is not met the conversion fails and names the best
   trial and the layers it tried.

The drop is Dice(FP32 masks, ground truth) - Dice(int8 masks, ground truth), averaged over images, when the
images have ground truth; without it, 1 - mask agreement (Dice between the int8 and FP32 masks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DEFAULT_MAX_DROP = 0.01
MAX_TRIALS = 6


class BudgetNotMetError(ValueError):
    """No layer choice met the budget; ``result`` holds every trial."""

    def __init__(self, message: str, result: BudgetResult):
        super().__init__(message)
        self.result = result


@dataclass
class Trial:
    keep_float: list[str]
    drop: float
    agreement: float
    seconds: float


@dataclass
class BudgetResult:
    """What the search tried and what it chose."""

    max_drop: float
    metric: str
    search_images: int
    confirm_images: int
    trials: list[Trial] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)
    chosen: int | None = None
    confirm: dict[str, float] | None = None
    note: str = ""

    @property
    def met(self) -> bool:
        return self.chosen is not None

    @property
    def confirmed(self) -> bool:
        return self.confirm is not None and self.confirm["drop"] <= self.max_drop

    @property
    def best(self) -> Trial | None:
        return min(self.trials, key=lambda t: t.drop) if self.trials else None

    def to_dict(self) -> dict[str, Any]:
        chosen = self.trials[self.chosen] if self.chosen is not None else None
        return {
            "max_dice_drop": self.max_drop,
            "metric": self.metric,
            "search_images": self.search_images,
            "confirm_images": self.confirm_images,
            "met": self.met,
            "keep_float": list(chosen.keep_float) if chosen else None,
            "search_drop": chosen.drop if chosen else None,
            "confirm": self.confirm,
            "confirmed": self.confirmed,
            "ranking": self.ranking[:16],
            "trials": [asdict(t) for t in self.trials],
            "note": self.note,
        }

    def summary(self) -> str:
        if not self.met:
            best = self.best
            return (f"budget {self.max_drop} NOT met after {len(self.trials)} trials; best drop "
                    f"{best.drop:+.4f} with {len(best.keep_float)} layers in float" if best else "no trial ran")
        t = self.trials[self.chosen or 0]
        kept = f"{len(t.keep_float)} layers in float" if t.keep_float else "all layers int8"
        conf = self.confirm or {}
        return (f"budget {self.max_drop}: {kept}, {self.metric} drop {t.drop:+.4f} (search), "
                f"{conf.get('drop', float('nan')):+.4f} (confirm{'' if self.confirmed else ': MISSED'})")


def drop_of(
    reference: np.ndarray, candidate: np.ndarray, post: Any, labels: np.ndarray | None
) -> tuple[float, float]:
    """(drop, mask agreement) of candidate logits against reference logits (see the module docstring)."""
    from edgeseg.converters.verify import compare

    fig = compare(reference, candidate, post, "int8", labels).figures
    if "dice_reference" in fig:
        return fig["dice_reference"] - fig["dice_candidate"], fig["mask_agreement"]
    return 1.0 - fig["mask_agreement"], fig["mask_agreement"]


@dataclass
class HeldBack:
    """What a trial is judged on: the held-back images, their FP32 logits, their masks (None: agreement
    with the FP32 masks instead of Dice) and the post-processing (threshold) that makes masks of logits."""

    images: np.ndarray
    reference: np.ndarray
    labels: np.ndarray | None
    post: Any


def fit(
    make: Callable[[Sequence[str]], Any],
    run: Callable[[Any, np.ndarray], np.ndarray],
    rank: Callable[[Any], list[str]],
    held: HeldBack,
    max_drop: float,
    *,
    max_trials: int = MAX_TRIALS,
    log: Callable[[str], None] | None = None,
    first: Any = None,
) -> tuple[Any, BudgetResult]:
    """Search for the fewest float layers that keep the drop within ``max_drop``.

    Args:
        make: builds the int8 artifact with the given layers kept in float; returns its handle (a path).
        run: logits (channels-first) of an artifact on images.
        rank: the layers of an all-int8 artifact, most damaging first.
        held: the held-back images, their FP32 logits and masks, and the post-processing.
        max_drop: the budget.
        max_trials: conversions allowed after the first.
        first: the all-int8 artifact when the caller already built it (else the first trial builds it).

    Returns:
        (the chosen artifact's handle, the record). The chosen artifact is the last one ``make`` built.

    Raises:
        BudgetNotMetError: no trial met the budget (the record is on the error).
    """
    say = log or (lambda _m: None)
    images, reference, labels, post = held.images, held.reference, held.labels, held.post
    n = int(images.shape[0])
    half = max(1, n // 2)
    search, confirm = slice(0, half), slice(half, n)
    lab = (lambda s: None) if labels is None else (lambda s: labels[s])
    result = BudgetResult(max_drop=float(max_drop), metric="dice" if labels is not None else "agreement",
                          search_images=half, confirm_images=n - half)
    built: dict[int, Any] = {}

    def trial(keep: Sequence[str], handle: Any = None) -> float:
        t0 = time.perf_counter()
        handle = make(list(keep)) if handle is None else handle
        logits = run(handle, images[search])
        drop, agree = drop_of(reference[search], logits, post, lab(search))
        result.trials.append(Trial(keep_float=list(keep), drop=float(drop), agreement=float(agree),
                                   seconds=round(time.perf_counter() - t0, 2)))
        built[len(result.trials) - 1] = handle
        say(f"  budget trial {len(result.trials)}: {len(keep)} layers in float, drop {drop:+.4f} "
            f"(agreement {agree:.4f})")
        return drop

    if trial([], first) <= max_drop:
        result.chosen = 0
    else:
        try:
            result.ranking = rank(built[0])
        except NotImplementedError as exc:
            result.note = f"no layer ranking: {exc}"
        k, ok_k, bad_k = 1, None, 0
        while result.ranking and len(result.trials) <= max_trials and k <= len(result.ranking):
            if trial(result.ranking[:k]) <= max_drop:
                ok_k, result.chosen = k, len(result.trials) - 1
                break
            bad_k = k
            k = min(2 * k, len(result.ranking)) if k < len(result.ranking) else k + 1
        while ok_k is not None and ok_k - bad_k > 1 and len(result.trials) <= max_trials:
            mid = (ok_k + bad_k) // 2
            if trial(result.ranking[:mid]) <= max_drop:
                ok_k, result.chosen = mid, len(result.trials) - 1
            else:
                bad_k = mid
    if result.chosen is None:
        best = result.best
        tried = list(dict.fromkeys(n for t in result.trials for n in t.keep_float))
        names = ", ".join(tried[:8]) + (f" and {len(tried) - 8} more" if len(tried) > 8 else "")
        raise BudgetNotMetError(
            f"int8 misses the accuracy budget: best {result.metric} drop {best.drop:+.4f} > {max_drop} after "
            f"{len(result.trials)} trials (tried in float: {names or 'none'}); see the layers with --explain "
            "and name them with --keep-float, or use fp32/fp16, a larger --max-dice-drop, or more --calib-size"
            + (f" ({result.note})" if result.note else ""),
            result,
        )
    chosen = result.trials[result.chosen]
    if result.chosen != len(result.trials) - 1:  # the chosen one is rebuilt so it is the file on disk
        handle = make(chosen.keep_float)
    else:
        handle = built[result.chosen]
    if n - half:
        logits = run(handle, images[confirm])
        drop, agree = drop_of(reference[confirm], logits, post, lab(confirm))
        result.confirm = {"drop": float(drop), "agreement": float(agree)}
    return handle, result
