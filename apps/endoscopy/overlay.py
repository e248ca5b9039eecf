"""The demo's overlay on an RGB frame: tinted mask and its outline, per-polyp boxes with area %, and the HUD.

The tint and outline are ``edgeseg.runtimes.processing.overlay`` (one copy of that code for predict, bench and the
demo; the outline is one pixel wide on the mask's own border, so only mask pixels change); this module adds
what is specific to the live demo: connected regions with their boxes and areas, and the heads-up display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from edgeseg.apps.endoscopy import _cv
from edgeseg.runtimes.processing import overlay

BOX_COLOR = (255, 220, 0)  # RGB
TEXT_COLOR = (255, 255, 255)


@dataclass(frozen=True)
class Region:
    """One connected polyp region of a mask.

    Attributes:
        x, y, w, h: bounding box in frame pixels.
        area: pixel count.
        area_pct: share of the frame, in percent.
    """

    x: int
    y: int
    w: int
    h: int
    area: int
    area_pct: float

    def to_dict(self) -> dict[str, float | int | list[int]]:
        return {
            "box": [self.x, self.y, self.w, self.h],
            "area": self.area,
            "area_pct": round(self.area_pct, 3),
        }


@dataclass
class MaskInfo:
    """What the overlay needs from a mask, computed once per frame.

    Attributes:
        regions: connected regions at least ``min_area_pct`` of the frame, largest first.
        pixels: mask pixel count.
        area_pct: mask share of the frame, in percent.
    """

    regions: list[Region]
    pixels: int
    area_pct: float


def analyse_mask(mask: np.ndarray, min_area_pct: float = 0.05) -> MaskInfo:
    """Connected regions (8-connectivity) of a binary mask with their boxes, areas and outlines.

    Args:
        mask: (H, W) uint8/bool, non-zero = polyp.
        min_area_pct: regions smaller than this share of the frame (percent) get no box (specks).
    """
    cv2 = _cv.cv2()
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    total = float(m.shape[0] * m.shape[1])
    pixels = int(cv2.countNonZero(m))
    if pixels == 0:
        return MaskInfo([], 0, 0.0)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # labels + bincount: exact pixel areas (connectedComponentsWithStats costs ~10x more here)
    _, labels = cv2.connectedComponents(m, connectivity=8)
    areas = np.bincount(labels.ravel())
    regions = []
    for c in contours:
        x0, y0 = (int(v) for v in c[0, 0])
        area = int(areas[labels[y0, x0]])
        pct = 100.0 * area / total
        if pct >= min_area_pct:
            x, y, w, h = cv2.boundingRect(c)
            regions.append(Region(x, y, w, h, area, pct))
    regions.sort(key=lambda r: r.area, reverse=True)
    return MaskInfo(regions, pixels, 100.0 * pixels / total)


def find_regions(mask: np.ndarray, min_area_pct: float = 0.05) -> list[Region]:
    """Connected regions of a binary mask, largest first (see :func:`analyse_mask`)."""
    return analyse_mask(mask, min_area_pct).regions


def _font_scale(width: int) -> float:
    return max(0.35, min(0.6, width / 1100))


def draw_regions(
    frame: np.ndarray,
    regions: Sequence[Region],
    color: tuple[int, int, int] = BOX_COLOR,
    avoid: tuple[int, int, int, int] | None = None,
) -> None:
    """A box around each region, labelled with its share of the frame.

    The label sits above the box, or below it when above would leave the frame or cover ``avoid``
    (x, y, w, h: the HUD).
    """
    cv2 = _cv.cv2()
    scale = _font_scale(frame.shape[1])
    fh = frame.shape[0]
    for r in regions:
        cv2.rectangle(frame, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), color, 1)
        label = f"{r.area_pct:.1f}%"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        above = r.y - 3
        blocked = above - th < 0 or (
            avoid is not None
            and r.x < avoid[0] + avoid[2]
            and avoid[0] < r.x + tw
            and above - th < avoid[1] + avoid[3]
            and avoid[1] < above
        )
        ty = min(fh - 2, r.y + r.h + th + 2) if blocked else above
        cv2.putText(frame, label, (r.x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


@dataclass
class HudInfo:
    """What the heads-up display shows."""

    model: str
    runtime: str
    device: str
    precision: str
    fps: float = 0.0
    infer_ms: float = 0.0
    threshold: float = 0.5
    polyps: int = 0
    area_pct: float = 0.0
    dropped: int = 0
    paused: bool = False

    def lines(self) -> list[str]:
        state = "  PAUSED" if self.paused else ""
        return [
            f"{self.fps:5.1f} FPS  infer {self.infer_ms:5.1f} ms{state}",
            f"{self.runtime} / {self.device} / {self.precision}",
            self.model,
            f"polyps {self.polyps}  area {self.area_pct:.1f}%  thr {self.threshold:.2f}  drop {self.dropped}",
        ]


def hud_box(frame_shape: Sequence[int], info: HudInfo) -> tuple[int, int, int, int]:
    """The (x, y, w, h) rectangle the HUD covers on a frame of this shape."""
    cv2 = _cv.cv2()
    scale = _font_scale(int(frame_shape[1]))
    widths, height = [], 0
    for line in info.lines():
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        widths.append(tw)
        height = max(height, th + base)
    pad = 3
    w = min(int(frame_shape[1]), max(widths) + 2 * pad)
    h = min(int(frame_shape[0]), len(widths) * (height + 2) + 2 * pad)
    return 0, 0, w, h


def draw_hud(frame: np.ndarray, info: HudInfo) -> None:
    """The HUD in the top-left corner on a darkened band (in place)."""
    cv2 = _cv.cv2()
    scale = _font_scale(frame.shape[1])
    x, y, w, h = hud_box(frame.shape, info)
    band = frame[y : y + h, x : x + w]
    band[:] = (band.astype(np.uint16) * 2 // 5).astype(np.uint8)  # 40% brightness behind the text
    line_h = (h - 6) // len(info.lines())
    for i, line in enumerate(info.lines()):
        cv2.putText(
            frame,
            line,
            (x + 3, y + 3 + (i + 1) * line_h - 3),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            TEXT_COLOR,
            1,
            cv2.LINE_AA,
        )


def render(
    frame: np.ndarray,
    mask: np.ndarray,
    info: MaskInfo | None = None,
    hud: HudInfo | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """The full overlay on a new image: tinted mask, outline, boxes with area %, HUD.

    Args:
        frame: RGB uint8 frame.
        mask: (H, W) binary mask at the frame's size.
        info: the mask's :func:`analyse_mask` (computed here when None).
        hud: what the HUD shows (None: no HUD).
        alpha: tint opacity.
    """
    info = analyse_mask(mask) if info is None else info
    out = overlay(frame, mask, alpha=alpha, contour=True, thickness=1) if info.pixels else frame.copy()
    draw_regions(out, info.regions, avoid=hud_box(out.shape, hud) if hud is not None else None)
    if hud is not None:
        draw_hud(out, hud)
    return out
