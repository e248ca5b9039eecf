"""A moving endoscope over a still image: clips with ground truth for every frame, built from real images.

:func:`camera_clip` turns one (image, mask) pair, e.g. a Kvasir-SEG polyp, into a video of what a colonoscope
sees while it moves: a smooth pan, zoom, roll and forward motion (all as one affine warp applied to image
and mask together, so the mask stays right), motion blur along the direction of motion, slow exposure
changes, moving specular highlights, defocus episodes and dropped frames. Each frame comes with its mask,
so flicker, ghosts and lag can be measured against the truth, which no real clip offers.

:func:`pan_on_clip` adds the moment a polyp comes into view: the camera starts on a polyp-free part of the
image, pans onto the polyp, looks around it and pans away again, so the delay from a polyp appearing to its
first box can be measured.

Clips go to disk and back through :mod:`edgeseg.common.clips`.

Torch-free (numpy and Pillow): the demo's sources, the tests and the benchmark use it alike.

Examples:
    >>> from edgeseg.common.camera import camera_clip, pan_on_clip
    >>> for frame, mask, info in camera_clip(image, mask, n_frames=120, seed=3):
    ...     ...
    >>> first_polyp = next(i for i, (_, m, _) in enumerate(pan_on_clip(image, mask, 120)) if m.any())
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

ClipFrame = tuple[np.ndarray, np.ndarray, dict[str, Any]]


@dataclass(frozen=True)
class CameraMotion:
    """How hard the camera moves (amplitudes; 0 turns an effect off).

    Attributes:
        pan: largest shift, as a fraction of the frame side.
        zoom: largest zoom change (0.3: between 1/1.3x and 1.3x), forward motion included; the view always
            zooms in as far as it must to stay inside the image.
        roll: largest rotation in degrees.
        blur: motion-blur length in pixels per pixel of motion per frame.
        exposure: largest exposure change (0.3: 0.7x to 1.3x).
        highlights: number of moving specular highlights.
        defocus_every: a defocus episode every N frames (0: none); each lasts a few frames.
        drop_rate: chance that a frame is dropped (the clip jumps over it).
        period: frames per full cycle of the slow motions.
    """

    pan: float = 0.12
    zoom: float = 0.25
    roll: float = 12.0
    blur: float = 0.6
    exposure: float = 0.25
    highlights: int = 3
    defocus_every: int = 45
    drop_rate: float = 0.03
    period: int = 90


class _Scene:
    """One image and its mask under the camera: renders the view from a centre, zoom and roll."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, size: int | None, motion: CameraMotion,
                 rng: np.random.Generator):
        from PIL import Image

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
        self.m = motion
        self.h, self.w = image.shape[:2]
        self.out = int(size or min(self.h, self.w))
        self.src = Image.fromarray(image)
        self.src_mask = Image.fromarray((mask > 0).astype(np.uint8) * 255)
        self.spots = [(rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.015, 0.04))
                      for _ in range(motion.highlights)]
        self.prev: tuple[float, float] | None = None

    def render(self, t: int, centre: tuple[float, float], zoom: float, roll: float,
               phases: np.ndarray) -> ClipFrame:
        from PIL import Image, ImageFilter

        m, h, w, out = self.m, self.h, self.w, self.out
        cy, cx = centre
        prev, self.prev = self.prev, (cy, cx)
        speed = 0.0 if prev is None else float(np.hypot(cy - prev[0], cx - prev[1]))
        direction = 0.0 if prev is None else float(np.arctan2(cy - prev[0], cx - prev[1]))
        s = 2 * np.pi * t / m.period
        # never look past the image's edge: zoom in as far as this centre and roll need
        a = np.deg2rad(roll)
        reach = out / 2 * (abs(np.cos(a)) + abs(np.sin(a)))
        scale = max(zoom * out / min(h, w), reach / min(cx, w - cx), reach / min(cy, h - cy))
        coeffs = _affine(out, (cy, cx), scale, roll)
        frame = self.src.transform((out, out), Image.AFFINE, coeffs, resample=Image.BILINEAR)
        fmask = self.src_mask.transform((out, out), Image.AFFINE, coeffs, resample=Image.NEAREST)
        defocus = bool(m.defocus_every) and (t % m.defocus_every) < 4
        if defocus:
            frame = frame.filter(ImageFilter.GaussianBlur(radius=2.5))
        arr = np.asarray(frame, dtype=np.float32)
        blur = int(round(m.blur * speed * out / min(h, w)))
        if blur > 1:
            arr = _motion_blur(arr, blur, direction)
        exposure = float(1.0 + m.exposure * np.sin(0.45 * s + phases[4]))
        arr = _highlights(arr * exposure, self.spots, s, phases[5])
        return (np.clip(arr, 0, 255).astype(np.uint8), (np.asarray(fmask) > 127).astype(np.uint8),
                {"t": t, "shift": [float(cy - h / 2), float(cx - w / 2)], "zoom": zoom, "roll": roll,
                 "speed": speed, "blur": blur, "exposure": exposure, "defocus": defocus})


def camera_clip(
    image: np.ndarray,
    mask: np.ndarray,
    n_frames: int = 90,
    seed: int = 0,
    motion: CameraMotion | None = None,
    size: int | None = None,
) -> Iterator[ClipFrame]:
    """Frames (RGB uint8), masks (uint8 0/1) and per-frame facts of a camera moving over ``image``.

    Args:
        image: HxWx3 uint8 RGB.
        mask: HxW, foreground > 0.
        n_frames: frames to yield (dropped frames are not yielded; ``info["t"]`` counts them).
        seed: the random path and effects.
        motion: amplitudes of the effects.
        size: output side (square); default the image's shorter side.

    Yields:
        ``(frame, mask, info)``; ``info`` has ``t`` (time index, gaps where frames dropped), ``shift``,
        ``zoom``, ``roll``, ``speed`` (pixels per frame), ``blur``, ``exposure`` and ``defocus``.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    m = motion or CameraMotion()
    rng = np.random.default_rng(int(seed))
    phases = rng.uniform(0, 2 * np.pi, 6)
    scene = _Scene(image, mask, size, m, rng)
    h, w = scene.h, scene.w
    t = 0
    yielded = 0
    while yielded < n_frames:
        t += 1
        if m.drop_rate and rng.random() < m.drop_rate:
            continue  # a dropped frame: the next one jumps
        s = 2 * np.pi * t / m.period
        zoom = float(np.exp(m.zoom * np.sin(0.8 * s + phases[0])))
        roll = float(m.roll * np.sin(0.6 * s + phases[1]))
        cy = h / 2 + m.pan * h * np.sin(s + phases[2])
        cx = w / 2 + m.pan * w * np.sin(0.7 * s + phases[3])
        yielded += 1
        yield scene.render(t, (cy, cx), zoom, roll, phases)


# the polyp-free view at the start and end of a pan-on clip: closest zooms tried, a small wobble there
_AWAY_ZOOMS = (1.8, 2.4, 3.2, 4.2)
_AWAY_WOBBLE = 0.02  # of the image side
_AWAY_ROLL = 0.25  # of the motion's roll


def pan_on_clip(
    image: np.ndarray,
    mask: np.ndarray,
    n_frames: int = 120,
    seed: int = 0,
    motion: CameraMotion | None = None,
    size: int | None = None,
) -> Iterator[ClipFrame]:
    """A clip in which the polyp comes into view and leaves it again, with the effects of :func:`camera_clip`.

    The camera starts close to a polyp-free part of the image (the widest view that shows no polyp pixel),
    pans onto the polyp while pulling back, looks around it (``camera_clip``'s motion, centred on the
    polyp), and pans away again. Five phases of the clip's time line, in order: ``away`` (1/6), ``approach``
    (1/6), ``on`` (1/3), ``leave`` (1/6), ``away`` (1/6); dropped frames fall anywhere.

    Args:
        image: HxWx3 uint8 RGB.
        mask: HxW, foreground > 0; the polyp must leave a polyp-free view somewhere in the image.
        n_frames: frames to yield (at least 12).
        seed: the random path and effects.
        motion: amplitudes of the effects.
        size: output side (square); default the image's shorter side.

    Yields:
        ``(frame, mask, info)`` as :func:`camera_clip`, ``info["phase"]`` added.

    Raises:
        ValueError: no polyp in the mask, or the polyp fills the image so that no view is free of it (use
            :func:`camera_clip`, or another image).
    """
    if n_frames < 12:
        raise ValueError(f"a pan-on clip needs n_frames >= 12 (five phases), got {n_frames}")
    m = motion or CameraMotion()
    rng = np.random.default_rng(int(seed))
    phases = rng.uniform(0, 2 * np.pi, 6)
    scene = _Scene(image, mask, size, m, rng)
    h, w = scene.h, scene.w
    ys, xs = np.nonzero(mask > 0)
    if not len(ys):
        raise ValueError("the mask holds no polyp: a pan-on clip needs one to pan onto")
    polyp = ((ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2)
    away = _free_view(mask > 0, polyp, m.roll * _AWAY_ROLL)
    if away is None:
        raise ValueError(f"the polyp fills the image ({100 * np.mean(mask > 0):.0f}% of it): no view is free of "
                         "it, so it cannot come into view; use camera_clip or another image")
    kept: list[int] = []  # time steps that are not dropped, drawn up front so that the phases span the whole clip
    t = 0
    while len(kept) < n_frames:
        t += 1
        if not (m.drop_rate and rng.random() < m.drop_rate):
            kept.append(t)
    total = kept[-1]
    edges = np.array([1, 2, 3, 5, 6]) * total / 6  # ends of away, approach, on, leave
    (fy, fx), fzoom = away
    wob = _AWAY_WOBBLE * min(h, w)
    for t in kept:
        s = 2 * np.pi * t / m.period
        on_zoom = float(np.exp(m.zoom * np.sin(0.8 * s + phases[0])))
        on_roll = float(m.roll * np.sin(0.6 * s + phases[1]))
        on_c = (polyp[0] + m.pan * h * np.sin(s + phases[2]), polyp[1] + m.pan * w * np.sin(0.7 * s + phases[3]))
        off_c = (fy + wob * np.sin(s + phases[2]), fx + wob * np.sin(0.7 * s + phases[3]))
        off_zoom = fzoom * float(np.exp(0.05 * np.sin(0.8 * s + phases[0])))
        off_roll = _AWAY_ROLL * on_roll
        phase, u = _phase(t, edges)
        centre = ((1 - u) * off_c[0] + u * on_c[0], (1 - u) * off_c[1] + u * on_c[1])
        zoom = float(np.exp((1 - u) * np.log(off_zoom) + u * np.log(on_zoom)))
        roll = (1 - u) * off_roll + u * on_roll
        frame, fmask, info = scene.render(t, centre, zoom, roll, phases)
        info["phase"] = phase
        yield frame, fmask, info


def _phase(t: float, edges: np.ndarray) -> tuple[str, float]:
    """The phase at time ``t`` and how far the camera is on the polyp (0: away, 1: on; smooth in between)."""
    if t <= edges[0] or t > edges[4]:
        return "away", 0.0
    if t <= edges[1]:
        x = (t - edges[0]) / (edges[1] - edges[0])
        return "approach", float(x * x * (3 - 2 * x))
    if t <= edges[3]:
        return ("on", 1.0) if t <= edges[2] else ("leave", 1.0 - _smooth((t - edges[2]) / (edges[3] - edges[2])))
    return "away", 0.0


def _smooth(x: float) -> float:
    return float(x * x * (3 - 2 * x))


def _free_view(fg: np.ndarray, polyp: tuple[float, float], roll_deg: float
               ) -> tuple[tuple[float, float], float] | None:
    """The centre and zoom of the widest view (smallest zoom of ``_AWAY_ZOOMS``) that shows no polyp pixel,
    the one farthest from the polyp at that zoom; None when the polyp leaves no such view."""
    h, w = fg.shape
    integral = np.pad(fg.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    a = np.deg2rad(abs(roll_deg))
    widen = abs(np.cos(a)) + abs(np.sin(a))  # a rolled square view reaches this much further
    for zoom in _AWAY_ZOOMS:
        # half the view's side in image pixels, with room for the wobble (zoom, centre) at the free view
        half = min(h, w) / (2 * zoom * np.exp(-0.05)) * widen + _AWAY_WOBBLE * min(h, w) + 2
        if 2 * half >= min(h, w):
            continue
        best, best_d = None, -1.0
        for cy in np.linspace(half, h - half, 17):
            for cx in np.linspace(half, w - half, 17):
                y0, y1 = int(np.floor(cy - half)), int(np.ceil(cy + half))
                x0, x1 = int(np.floor(cx - half)), int(np.ceil(cx + half))
                y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
                inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
                d = float(np.hypot(cy - polyp[0], cx - polyp[1]))
                if inside == 0 and d > best_d:
                    best, best_d = (float(cy), float(cx)), d
        if best is not None:
            return best, zoom
    return None


def _affine(out: int, center: tuple[float, float], scale: float, roll_deg: float) -> tuple[float, ...]:
    """PIL affine coefficients mapping output pixels to source pixels: a crop around ``center``, zoomed by
    ``scale`` (output pixels per source pixel) and rotated by ``roll_deg``."""
    a = np.deg2rad(roll_deg)
    c, s = np.cos(a) / scale, np.sin(a) / scale
    ox = oy = out / 2
    cy, cx = center
    # source = R/scale * (output - o) + center
    return (c, -s, cx - c * ox + s * oy, s, c, cy - s * ox - c * oy)


def _motion_blur(arr: np.ndarray, length: int, direction: float) -> np.ndarray:
    """Average of ``length`` copies shifted along ``direction`` (a line kernel, no extra dependency)."""
    dy, dx = np.sin(direction), np.cos(direction)
    acc = np.zeros_like(arr)
    for i in range(length):
        k = i - (length - 1) / 2
        acc += np.roll(arr, (int(round(k * dy)), int(round(k * dx))), axis=(0, 1))
    return acc / length


def _highlights(arr: np.ndarray, spots: list[tuple[float, float, float]], s: float, phase: float) -> np.ndarray:
    """Specular glints: small saturated blobs that slide with the light."""
    if not spots:
        return arr
    h, w = arr.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    glow = np.zeros((h, w), np.float32)
    for i, (py, px, r) in enumerate(spots):
        y = h * (py + 0.08 * np.sin(1.7 * s + phase + i))
        x = w * (px + 0.08 * np.cos(1.3 * s + phase + 2 * i))
        rad = r * min(h, w)
        glow += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * rad * rad))
    return arr + 255.0 * np.clip(glow, 0, 1)[..., None]
