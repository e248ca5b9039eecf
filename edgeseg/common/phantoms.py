"""Synthetic endoscopy phantoms: deterministic by seed, numpy only (no torch, no OpenCV, no download).

A sample is a pinkish textured mucosa with folds, vignetting and specular highlights, holding 0..N polyps
(domed, shaded blobs with their own colour and texture) and the binary mask of the polyps. It is the data
every default test, example, calibration set and benchmark uses, so nothing needs a download.

API:
    ``synthetic_sample(seed, size=256, max_polyps=2) -> (rgb uint8 HxWx3, mask uint8 HxW in {0, 1})``
    ``SyntheticPolypDataset(n, size=256, seed=0, max_polyps=2)``: ``len``, ``ds[i] -> (rgb, mask)``
    ``synthetic_sequence(n_frames, size=256, seed=0) -> iterator of (rgb, mask)``: a moving polyp seen by a
    panning camera (for the camera demo).
    ``write_synthetic_folder(root, n, size=256, seed=0, val_fraction=0.2)``: a Kvasir-SEG-layout folder
    (``images/<id>.jpg``, ``masks/<id>.png``, ``train.txt``, ``val.txt``).

Examples:
    >>> rgb, mask = synthetic_sample(7, size=128)
    >>> rgb.shape, mask.shape, rgb.dtype
    ((128, 128, 3), (128, 128), dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Size = int | tuple[int, int]

_MUCOSA = np.array([0.80, 0.42, 0.38])  # base RGB of pink mucosa (0-1)


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if h < 16 or w < 16:
        raise ValueError(f"synthetic images must be at least 16x16, got {h}x{w}")
    return h, w


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small 2D grid to (h, w)."""
    gh, gw = grid.shape
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _noise(rng: np.random.Generator, h: int, w: int, octaves: tuple[int, ...] = (4, 9, 23)) -> np.ndarray:
    """Smooth value noise in about [-1, 1], summed over octaves (cells per side)."""
    out = np.zeros((h, w))
    amp, total = 1.0, 0.0
    for cells in octaves:
        out += amp * _upsample(rng.uniform(-1, 1, (cells + 1, cells + 1)), h, w)
        total += amp
        amp *= 0.55
    return out / total


@dataclass(frozen=True)
class _Polyp:
    cy: float
    cx: float
    radius: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) of radial harmonics 2..
    tint: tuple[float, float, float]
    texture_seed: int


def _random_polyp(rng: np.random.Generator, h: int, w: int) -> _Polyp:
    m = min(h, w)
    radius = rng.uniform(0.09, 0.24) * m
    cy = rng.uniform(radius * 1.1, h - radius * 1.1)
    cx = rng.uniform(radius * 1.1, w - radius * 1.1)
    harmonics = tuple((float(rng.uniform(0, 0.12 / k)), float(rng.uniform(0, 2 * np.pi))) for k in range(2, 6))
    # redder/darker or paler than the mucosa, never the same colour
    sign = rng.choice([-1.0, 1.0])
    tint = (float(sign * rng.uniform(0.10, 0.18)), float(sign * rng.uniform(0.06, 0.14) - 0.06),
            float(sign * rng.uniform(0.04, 0.10) - 0.04))
    return _Polyp(cy, cx, radius, harmonics, tint, int(rng.integers(2**31)))


def _polyp_field(p: _Polyp, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Normalised radius field: < 1 inside the polyp outline."""
    dy, dx = yy - p.cy, xx - p.cx
    theta = np.arctan2(dy, dx)
    r_edge = np.ones_like(theta)
    for k, (amp, phase) in enumerate(p.harmonics, start=2):
        r_edge += amp * np.cos(k * theta + phase)
    return np.hypot(dy, dx) / (p.radius * r_edge)


def _render(rng: np.random.Generator, h: int, w: int, polyps: list[_Polyp],
            background: np.ndarray | None = None, vignette: bool = True) -> tuple[np.ndarray, np.ndarray]:
    img = _mucosa(rng, h, w) if background is None else background.copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mask = np.zeros((h, w), dtype=bool)
    for p in polyps:
        rho = _polyp_field(p, yy, xx)
        inside = rho < 1.0
        if not inside.any():
            continue
        mask |= inside
        prng = np.random.default_rng(p.texture_seed)
        dome = np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))  # height of a spherical cap
        # light from the top-left: brighter there, shadowed bottom-right rim
        shade = 1.0 + 0.3 * dome * (-(yy - p.cy) - (xx - p.cx)) / (2 * p.radius)
        tex = 1.0 + 0.10 * _noise(prng, h, w, (6, 15, 31))
        colour = np.clip(_MUCOSA + np.array(p.tint), 0.05, 1.0)
        poly = colour[None, None, :] * (shade * tex)[..., None] * (0.85 + 0.15 * dome)[..., None]
        alpha = np.clip((1.0 - rho) * p.radius / 1.5, 0.0, 1.0)[..., None]  # ~1.5 px soft edge
        img = img * (1 - alpha) + poly * alpha
        # dark rim just outside the outline (the fold where the polyp meets the wall)
        rim = np.exp(-((rho - 1.0) * p.radius / 2.5) ** 2) * (rho >= 1.0)
        img = img * (1.0 - 0.3 * rim[..., None])
    # specular highlights: small bright spots, some on polyps
    n_spec = int(rng.integers(2, 7))
    for i in range(n_spec):
        if polyps and i % 2 == 0:
            p = polyps[int(rng.integers(len(polyps)))]
            sy = p.cy + rng.uniform(-0.5, 0.2) * p.radius
            sx = p.cx + rng.uniform(-0.5, 0.2) * p.radius
        else:
            sy, sx = rng.uniform(0, h), rng.uniform(0, w)
        sr = rng.uniform(0.006, 0.02) * min(h, w)
        spot = np.exp(-(((yy - sy) / sr) ** 2 + ((xx - sx) / (sr * rng.uniform(0.6, 1.8))) ** 2))
        img = img + (1.0 - img) * spot[..., None] * 0.95
    if vignette:
        r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
        img = img * np.clip(1.0 - 0.35 * r2 ** 1.3, 0.2, 1.0)[..., None]
    img = img + rng.normal(0, 0.012, img.shape)  # sensor noise
    rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return rgb, mask.astype(np.uint8)


def _mucosa(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    low = _noise(rng, h, w, (3, 6))
    fine = _noise(rng, h, w, (20, 45))
    # folds: bright/dark bands following a warped sinusoid
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0, np.pi)
    warp = 0.15 * _noise(rng, h, w, (3,))
    phase = (np.cos(angle) * yy + np.sin(angle) * xx + warp) * rng.uniform(4, 9) * 2 * np.pi
    folds = 0.5 + 0.5 * np.sin(phase)
    # thin dark vessels: ridges of fine noise
    vessels = np.exp(-(_noise(rng, h, w, (8, 17)) / 0.035) ** 2)
    base = _MUCOSA * rng.uniform(0.9, 1.08, 3)
    lum = 1.0 + 0.14 * low + 0.05 * fine + 0.10 * (folds - 0.5)
    img = base[None, None, :] * lum[..., None]
    img = img * (1.0 - 0.16 * vessels[..., None] * np.array([0.6, 1.0, 1.0]))
    return img


def synthetic_sample(seed: int, size: Size = 256, max_polyps: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic endoscopy frame and its polyp mask.

    Args:
        seed: the sample is a pure function of (seed, size, max_polyps).
        size: output size, an int or (H, W).
        max_polyps: the frame holds 0..max_polyps polyps (about 1 in 10 frames holds none).

    Returns:
        (rgb uint8 HxWx3, mask uint8 HxW with values {0, 1}).
    """
    if max_polyps < 0:
        raise ValueError(f"max_polyps must be >= 0, got {max_polyps}")
    h, w = _hw(size)
    rng = np.random.default_rng(int(seed))
    if max_polyps == 0 or rng.random() < 0.1:
        n = 0
    else:
        n = int(rng.integers(1, max_polyps + 1))
    polyps = [_random_polyp(rng, h, w) for _ in range(n)]
    return _render(rng, h, w, polyps)


class SyntheticPolypDataset:
    """``n`` synthetic samples, generated on access (deterministic, torch-free).

    Sample ``i`` is ``synthetic_sample(seed * 100_003 + i, size, max_polyps)``, so two datasets with
    different seeds do not share samples.

    Examples:
        >>> ds = SyntheticPolypDataset(8, size=64, seed=1)
        >>> rgb, mask = ds[0]
    """

    def __init__(self, n: int, size: Size = 256, seed: int = 0, max_polyps: int = 2):
        if n < 1:
            raise ValueError(f"a synthetic dataset needs n >= 1 samples, got {n}")
        self.n, self.size, self.seed, self.max_polyps = int(n), size, int(seed), int(max_polyps)
        self.ids = [f"synthetic-{self.seed}-{i:05d}" for i in range(self.n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        i %= self.n
        return synthetic_sample(self.seed * 100_003 + i, self.size, self.max_polyps)


def synthetic_sequence(n_frames: int, size: Size = 256, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames of a panning camera over one polyp that drifts and breathes; yields (rgb, mask) per frame.

    The mucosa is rendered once on a larger canvas and cropped along a smooth path, so consecutive frames
    are coherent (what a temporal smoother or a tracker in the camera demo expects).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    h, w = _hw(size)
    rng = np.random.default_rng(int(seed))
    ch, cw = int(h * 1.5), int(w * 1.5)
    canvas = _mucosa(rng, ch, cw)
    polyp = _random_polyp(rng, h, w)
    polyp = _Polyp(h / 2, w / 2, min(h, w) * 0.16, polyp.harmonics, polyp.tint, polyp.texture_seed)
    ph = rng.uniform(0, 2 * np.pi, 4)
    for t in range(n_frames):
        s = 2 * np.pi * t / max(n_frames, 60)
        oy = int((ch - h) * (0.5 + 0.45 * np.sin(s + ph[0])))
        ox = int((cw - w) * (0.5 + 0.45 * np.sin(0.7 * s + ph[1])))
        bg = canvas[oy:oy + h, ox:ox + w]
        p = _Polyp(h * (0.5 + 0.25 * np.sin(1.3 * s + ph[2])), w * (0.5 + 0.25 * np.cos(0.9 * s + ph[3])),
                   polyp.radius * (1.0 + 0.2 * np.sin(2.1 * s)), polyp.harmonics, polyp.tint, polyp.texture_seed)
        frng = np.random.default_rng([int(seed), t])
        yield _render(frng, h, w, [p], background=bg)


def write_synthetic_folder(root: str | Path, n: int, size: Size = 256, seed: int = 0,
                           val_fraction: float = 0.2, max_polyps: int = 2) -> Path:
    """Write ``n`` synthetic samples as a Kvasir-SEG-layout folder with ``train.txt`` / ``val.txt``.

    Images are JPEG (like Kvasir-SEG), masks PNG 0/255. Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    ds = SyntheticPolypDataset(n, size, seed, max_polyps)
    for i, sid in enumerate(ds.ids):
        rgb, mask = ds[i]
        Image.fromarray(rgb).save(root / "images" / f"{sid}.jpg", quality=95)
        Image.fromarray(mask * 255).save(root / "masks" / f"{sid}.png")
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    (root / "train.txt").write_text("".join(f"{s}\n" for s in ds.ids[: n - n_val]))
    (root / "val.txt").write_text("".join(f"{s}\n" for s in ds.ids[n - n_val:]))
    return root
