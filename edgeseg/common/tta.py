"""Test-time augmentation: which views a prediction averages (:class:`TTASpec`), and the numpy executor that
runs it around any predictor (torch-free, for the device side).

A view flips the input on some spatial axes and/or resizes it; the model's logits of each view are mapped back
(flipped again, resized to the input size) and the logits are averaged, so the result is still logits and
post-processing (sigmoid/softmax, threshold) is unchanged. The torch executor, the module an artifact can
carry, is :class:`edgeseg.layers.tta.TestTimeAugmentation`; a test keeps the two equal.

Modes (``--tta MODE``):

- ``hflip``: the input and its left-right mirror (2 passes);
- ``flips``: also the up-down mirror and both (4 passes): endoscopy frames have no canonical orientation;
- ``MODE+scales``: each of those at 0.75x, 1x and 1.25x the input size (the training scales; 3x the passes),
  resized sizes rounded to the model's stride.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# flipped spatial axes per view, counted from the last (-1: width, -2: height); () is the input as it is
FLIP_SETS: dict[str, tuple[tuple[int, ...], ...]] = {
    "hflip": ((), (-1,)),
    "flips": ((), (-1,), (-2,), (-2, -1)),
}
SCALES = (0.75, 1.0, 1.25)
TTA_MODES = tuple(FLIP_SETS) + tuple(f"{m}+scales" for m in FLIP_SETS)


@dataclass(frozen=True)
class TTASpec:
    """The views of a test-time augmentation.

    Attributes:
        flips: the spatial axes each view flips (counted from the last; () = none).
        scales: input-size factors each flip is also run at (1.0 = as is).
        multiple: resized sizes are rounded to a multiple of this (the model's stride).
    """

    flips: tuple[tuple[int, ...], ...] = ((),)
    scales: tuple[float, ...] = (1.0,)
    multiple: int = 32

    def __post_init__(self) -> None:
        if not self.flips or not self.scales:
            raise ValueError("a test-time augmentation needs at least one flip set and one scale")
        if any(s <= 0 for s in self.scales):
            raise ValueError(f"TTA scales must be > 0, got {self.scales}")
        if any(a >= 0 for axes in self.flips for a in axes):
            raise ValueError(f"TTA flip axes count from the last spatial axis (-1, -2, ...), got {self.flips}")

    @property
    def passes(self) -> int:
        """Model calls per prediction."""
        return len(self.flips) * len(self.scales)

    @property
    def name(self) -> str:
        """The mode this spec is (``flips+scales``), or a description of a custom one."""
        for mode in TTA_MODES:
            if parse_tta(mode, self.multiple) == self:
                return mode
        return f"flips={list(map(list, self.flips))} scales={list(self.scales)}"

    def sizes(self, spatial: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The in-plane (last two axes) input size of each scale."""
        out = []
        for s in self.scales:
            if s == 1.0:
                out.append(tuple(spatial))
            else:
                out.append(tuple(spatial[:-2]) + tuple(max(self.multiple, int(round(d * s / self.multiple))
                                                            * self.multiple) for d in spatial[-2:]))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON view for manifests and reports."""
        return {"mode": self.name, "flips": [list(a) for a in self.flips], "scales": list(self.scales),
                "multiple": self.multiple, "passes": self.passes, "merge": "mean of logits"}


def parse_tta(mode: str, multiple: int = 32) -> TTASpec:
    """The :class:`TTASpec` of a ``--tta`` mode (see the module docstring).

    Raises:
        ValueError: an unknown mode (with the valid ones).
    """
    text = str(mode).strip().lower()
    base, plus, extra = text.partition("+")
    if base not in FLIP_SETS or (plus and extra != "scales"):
        raise ValueError(f"unknown --tta mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
    return TTASpec(FLIP_SETS[base], SCALES if plus else (1.0,), int(multiple))


def _resize(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes (half-pixel centres, no antialiasing: torch's
    ``interpolate(mode="bilinear", align_corners=False)``)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(hw):
        return x

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(pos).astype(np.intp), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = taps(h, hw[0])
    x0, x1, fx = taps(w, hw[1])
    rows = x[..., y0, :] * (1 - fy)[:, None] + x[..., y1, :] * fy[:, None]
    return (rows[..., x0] * (1 - fx) + rows[..., x1] * fx).astype(np.float32)


def tta_predict(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, spec: TTASpec) -> np.ndarray:
    """The mean logits of ``predict`` over the views of ``spec`` (numpy, channels-first (N, C, *spatial)).

    The flips of one size go to ``predict`` as one batch (a batch-1 artifact's runtime splits it).

    Examples:
        >>> logits = tta_predict(runtime.infer, batch, parse_tta("flips"))
    """
    x = np.asarray(x, dtype=np.float32)
    n, spatial = x.shape[0], tuple(x.shape[2:])
    total: np.ndarray | None = None
    for size in spec.sizes(spatial):
        xs = _resize(x, size[-2:])
        stacked = np.concatenate([np.flip(xs, axes) if axes else xs for axes in spec.flips])
        y = np.asarray(predict(np.ascontiguousarray(stacked)), dtype=np.float32)
        for k, axes in enumerate(spec.flips):
            yk = y[k * n : (k + 1) * n]
            yk = _resize(np.flip(yk, axes) if axes else yk, spatial[-2:])
            total = yk.copy() if total is None else total + yk
    assert total is not None  # a spec has at least one view
    return np.ascontiguousarray(total / np.float32(spec.passes))
