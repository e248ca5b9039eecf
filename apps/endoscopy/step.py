"""One frame through the demo: segment, steady the mask, find its regions, draw the overlay, and say what it cost.

:class:`FrameStep` is the per-frame work of the loop (``edgeseg.apps.endoscopy.pipeline``), apart from
reading the frame and from where the result goes (``edgeseg.apps.endoscopy.outputs``), so it can be driven
frame by frame without a source or an output.

Examples:
    >>> step = FrameStep(segmenter, HudInfo("ultralightunet-s", "openvino", "cpu", "fp32"))
    >>> result = step(frame, index=0, threshold=0.5)
    >>> result.annotated, result.record["polyps"], result.ms["infer"]
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeseg.apps.endoscopy.capture import Frame
from edgeseg.apps.endoscopy.inference import Segmenter
from edgeseg.apps.endoscopy.overlay import HudInfo, analyse_mask, render
from edgeseg.apps.endoscopy.stabilize import Stabilizer


@dataclass
class FrameResult:
    """One processed frame (what ``run_demo``'s ``on_frame`` callback receives).

    Attributes:
        frame: the RGB frame as captured.
        annotated: the overlay drawn on it (what is recorded, streamed and shown).
        mask: the mask shown (steady, or the model's own with stabilisation off).
        record: the frame's log record (the loop adds the output stage's time once the frame is shown).
        ms: what each stage took (read, pre, infer, post, stabilize, overlay).
    """

    frame: np.ndarray
    annotated: np.ndarray
    mask: np.ndarray
    record: dict[str, Any]
    ms: dict[str, float] = field(default_factory=dict)


class FrameStep:
    """Frame -> :class:`FrameResult`: the segmenter, the stabiliser (None: raw masks) and the overlay with its HUD.

    Args:
        segmenter: an opened :class:`~edgeseg.apps.endoscopy.inference.Segmenter`.
        hud: what the HUD shows; the step updates its live figures (FPS, inference, polyps, area).
        stabilizer: steadies the masks (``None``: each frame's raw mask is shown).
        alpha: mask tint opacity.
    """

    def __init__(self, segmenter: Segmenter, hud: HudInfo, stabilizer: Stabilizer | None = None, alpha: float = 0.45):
        self.seg = segmenter
        self.hud = hud
        self.stabilizer = stabilizer
        self.alpha = alpha
        self._recent: deque[float] = deque(maxlen=30)

    def warm_up(self, image: np.ndarray, threshold: float) -> float:
        """One untimed pass (OpenCV's and the runtime's first-call set-up stay out of the figures); its seconds."""
        t0 = time.perf_counter()
        first = self.seg(image, threshold=threshold)
        render(image, first.mask, None, self.hud, alpha=self.alpha)
        return time.perf_counter() - t0

    def fps(self) -> float:
        """Frames per second over the last 30 frames (what the HUD shows)."""
        r = self._recent
        return (len(r) - 1) / (r[-1] - r[0]) if len(r) > 1 and r[-1] > r[0] else 0.0

    def __call__(self, frame: Frame | np.ndarray, index: int = 0, threshold: float | None = None, dropped: int = 0,
                 t0: float = 0.0, wall0: float = 0.0) -> FrameResult:
        """Process one frame.

        Args:
            frame: a captured :class:`~edgeseg.apps.endoscopy.capture.Frame` (or a bare RGB image).
            index: the frame's number in this run (the record's ``frame``).
            threshold: probability threshold (default: the segmenter's).
            dropped: frames dropped so far (the HUD and the record show it).
            t0: ``time.perf_counter()`` at the start of the run (record times are relative to it).
            wall0: ``time.time()`` at the start of the run (the record's ``timestamp`` is wall-clock time).
        """
        if isinstance(frame, np.ndarray):
            frame = Frame(frame, index, time.perf_counter(), 0.0)
        t_get = time.perf_counter()
        threshold = self.seg.threshold if threshold is None else threshold
        res = self.seg(frame.image, threshold=threshold)
        ts = time.perf_counter()
        steady = self.stabilizer(res.mask) if self.stabilizer is not None else None
        shown = res.mask if steady is None else steady.mask
        t1 = time.perf_counter()
        mi = analyse_mask(shown)
        self._recent.append(t1)
        hud = self.hud
        hud.fps, hud.infer_ms, hud.threshold = self.fps(), res.infer_ms, threshold
        hud.polyps, hud.area_pct, hud.dropped = len(mi.regions), mi.area_pct, dropped
        annotated = render(frame.image, shown, mi, hud, alpha=self.alpha)
        t2 = time.perf_counter()
        ms = {"read": frame.read_ms, "pre": res.pre_ms, "infer": res.infer_ms, "post": res.post_ms,
              "stabilize": (t1 - ts) * 1e3, "overlay": (t2 - t1) * 1e3, "wait": (t_get - frame.t_capture) * 1e3}
        record: dict[str, Any] = {
            "frame": index,
            "source_frame": frame.index,
            "timestamp": round(wall0 + (frame.t_capture - t0), 6),
            "t": round(frame.t_capture - t0, 6),
            "infer_ms": round(res.infer_ms, 3),
            "pre_ms": round(res.pre_ms, 3),
            "post_ms": round(res.post_ms, 3),
            "read_ms": round(frame.read_ms, 3),
            "overlay_ms": round(ms["overlay"], 3),
            "wait_ms": round(max(0.0, ms["wait"]), 3),
            "mask_pixels": mi.pixels,
            "mask_area_pct": round(mi.area_pct, 3),
            "polyps": len(mi.regions),
            "regions": [r.to_dict() for r in mi.regions],
            "threshold": threshold,
            "dropped_total": dropped,
        }
        if steady is not None:  # what the model saw vs what is shown
            record.update(raw_polyps=steady.raw_regions, tracks=[t.id for t in steady.tracks],
                          stabilize_ms=round(ms["stabilize"], 3))
        return FrameResult(frame.image, annotated, shown, record, ms)

    def stream_stats(self, result: FrameResult, frames: int) -> dict[str, Any]:
        """The figures the MJPEG page shows beside the stream."""
        r = result.record
        return {"frame": frames, "fps": self.hud.fps, "infer_ms": r["infer_ms"], "polyps": r["polyps"],
                "area_pct": r["mask_area_pct"]}
