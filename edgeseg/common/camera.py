"""A moving endoscope over a still image: clips with ground truth for every frame, built from real images.

:func:`camera_clip` turns one (image, mask) pair, e.g. a Kvasir-SEG polyp, into a video of what a colonoscope
sees while it moves: a smooth pan, zoom, roll and forward motion (all as one affine warp applied to image
and mask together, so the mask stays right), motion blur along the direction of motion, slow exposure
changes, moving specular highlights, defocus episodes and dropped frames. Each frame comes with its mask,
so flicker, ghosts and lag can be measured against the truth, which no real clip offers.

Torch-free (numpy and Pillow): the demo's sources, the tests and the benchmark use it alike.

Examples:
    >>> from edgeseg.common.camera import camera_clip
    >>> for frame, mask, info in camera_clip(image, mask, n_frames=120, seed=3):
    ...     ...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


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


def camera_clip(
    image: np.ndarray,
    mask: np.ndarray,
    n_frames: int = 90,
    seed: int = 0,
    motion: CameraMotion | None = None,
    size: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
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
    from PIL import Image, ImageFilter

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    m = motion or CameraMotion()
    h, w = image.shape[:2]
    out = int(size or min(h, w))
    rng = np.random.default_rng(int(seed))
    phases = rng.uniform(0, 2 * np.pi, 6)
    src = Image.fromarray(image)
    src_mask = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    spots = [(rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.015, 0.04)) for _ in range(m.highlights)]
    prev_center = None
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
        speed = 0.0 if prev_center is None else float(np.hypot(cy - prev_center[0], cx - prev_center[1]))
        direction = 0.0 if prev_center is None else float(np.arctan2(cy - prev_center[0], cx - prev_center[1]))
        prev_center = (cy, cx)
        # never look past the image's edge: zoom in as far as this centre and roll need
        a = np.deg2rad(roll)
        reach = out / 2 * (abs(np.cos(a)) + abs(np.sin(a)))
        scale = max(zoom * out / min(h, w), reach / min(cx, w - cx), reach / min(cy, h - cy))
        coeffs = _affine(out, (cy, cx), scale, roll)
        frame = src.transform((out, out), Image.AFFINE, coeffs, resample=Image.BILINEAR)
        fmask = src_mask.transform((out, out), Image.AFFINE, coeffs, resample=Image.NEAREST)
        defocus = bool(m.defocus_every) and (t % m.defocus_every) < 4
        if defocus:
            frame = frame.filter(ImageFilter.GaussianBlur(radius=2.5))
        arr = np.asarray(frame, dtype=np.float32)
        blur = int(round(m.blur * speed * out / min(h, w)))
        if blur > 1:
            arr = _motion_blur(arr, blur, direction)
        exposure = float(1.0 + m.exposure * np.sin(0.45 * s + phases[4]))
        arr = arr * exposure
        arr = _highlights(arr, spots, s, phases[5])
        yielded += 1
        yield (np.clip(arr, 0, 255).astype(np.uint8), (np.asarray(fmask) > 127).astype(np.uint8),
               {"t": t, "shift": [float(cy - h / 2), float(cx - w / 2)], "zoom": zoom, "roll": roll,
                "speed": speed, "blur": blur, "exposure": exposure, "defocus": defocus})


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
