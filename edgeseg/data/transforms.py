"""Transforms: resize, ImageNet normalisation, flips, rotations and multi-scale training.

Numpy functions work on one uint8 image (used by evaluation and prediction). The batch augmentation works on
torch tensors already in memory, so training never waits on per-sample Python code; torch is imported inside
those functions only, so importing this module stays torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTISCALE = (0.75, 1.0, 1.25)


def preprocessing_dict(size: Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD, color: str = "rgb",
                       resize: str = "stretch") -> dict:
    """The pre-processing record a checkpoint carries (same fields as ``edgeseg.runtimes.manifest.Preprocessing``)."""
    return {"size": [int(s) for s in size], "resize": resize, "mean": [float(m) for m in mean],
            "std": [float(s) for s in std], "color": color}


def normalize(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """uint8 HxWxC (or HxW) -> float32 CxHxW, scaled to 0-1 then ``(x - mean) / std`` per channel."""
    x = image.astype(np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    m = np.asarray(mean, np.float32)[: x.shape[-1]]
    s = np.asarray(std, np.float32)[: x.shape[-1]]
    return np.ascontiguousarray(((x - m) / s).transpose(2, 0, 1))


def scaled_size(size: int, scale: float, divisible_by: int = 32) -> int:
    """``size * scale`` rounded to a multiple of ``divisible_by`` (at least one multiple)."""
    return max(divisible_by, int(round(size * scale / divisible_by)) * divisible_by)


@dataclass
class BatchAugment:
    """Random flips, 90-degree and small-angle rotations, zoom and colour jitter, per sample on a batch.

    Attributes:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rot90: probability of a random multiple-of-90 rotation (square inputs only).
        max_angle: small rotations drawn uniformly in [-max_angle, max_angle] degrees (0 disables).
        scales: multi-scale training factors; one is drawn per batch (``(1.0,)`` disables).
        zoom: per-sample zoom factor drawn uniformly in [1 - zoom, 1 + zoom] (> 1 magnifies; the border is
            mirrored when it shrinks), in the same resampling as the rotation (0 disables).
        color: brightness, contrast and saturation factors each drawn in [1 - color, 1 + color] per sample;
            applied by :meth:`jitter_colors` to 0-1 images before normalisation (0 disables).
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: float = 0.5
    max_angle: float = 15.0
    scales: tuple[float, ...] = field(default=MULTISCALE)
    zoom: float = 0.0
    color: float = 0.0

    def jitter_colors(self, images, generator):
        """Brightness, contrast and saturation jitter of 0-1 images (N, C, H, W), clamped to 0-1.

        No random numbers are drawn when ``color`` is 0, so runs without it keep their augmentation stream.
        """
        import torch

        if self.color <= 0:
            return images
        n = images.shape[0]

        def factor():
            return (1.0 + (torch.rand(n, generator=generator) * 2 - 1) * self.color).view(n, 1, 1, 1).to(
                images.device, images.dtype)

        bright, contrast, sat = factor(), factor(), factor()
        images = images * bright
        mean = images.mean((1, 2, 3), keepdim=True)
        images = (images - mean) * contrast + mean
        if images.shape[1] == 3:
            gray = (0.299 * images[:, :1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:])
            images = gray + (images - gray) * sat
        return images.clamp_(0.0, 1.0)

    def __call__(self, images, masks, generator):
        """Augment float images (N, C, H, W) and integer masks (N, H, W) with ``generator`` (a torch RNG)."""
        import torch
        import torch.nn.functional as F

        n = images.shape[0]

        def draw(p: float):
            return torch.rand(n, generator=generator) < p

        flip_h, flip_v = draw(self.hflip), draw(self.vflip)
        if flip_h.any():
            images[flip_h] = images[flip_h].flip(-1)
            masks[flip_h] = masks[flip_h].flip(-1)
        if flip_v.any():
            images[flip_v] = images[flip_v].flip(-2)
            masks[flip_v] = masks[flip_v].flip(-2)
        if self.rot90 > 0 and images.shape[-1] == images.shape[-2]:
            rot = draw(self.rot90)
            if rot.any():
                k = int(torch.randint(1, 4, (1,), generator=generator))
                images[rot] = torch.rot90(images[rot], k, dims=(-2, -1))
                masks[rot] = torch.rot90(masks[rot], k, dims=(-2, -1))
        if self.max_angle > 0 or self.zoom > 0:
            ang = (torch.rand(n, generator=generator) * 2 - 1) * np.deg2rad(self.max_angle) \
                if self.max_angle > 0 else torch.zeros(n)
            # the grid samples the source at theta @ (output coordinates): a factor z magnifies by 1/z
            z = 1.0 / (1.0 + (torch.rand(n, generator=generator) * 2 - 1) * self.zoom) \
                if self.zoom > 0 else torch.ones(n)
            cos, sin = torch.cos(ang) * z, torch.sin(ang) * z
            theta = torch.zeros(n, 2, 3)
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
            theta = theta.to(images.device, images.dtype)
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            m = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="reflection",
                              align_corners=False)
            masks = m[:, 0].round().to(masks.dtype)
        if len(self.scales) > 1:
            s = self.scales[int(torch.randint(len(self.scales), (1,), generator=generator))]
            h = scaled_size(images.shape[-2], s)
            w = scaled_size(images.shape[-1], s)
            if (h, w) != tuple(images.shape[-2:]):
                images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
                masks = F.interpolate(masks[:, None].float(), size=(h, w), mode="nearest")[:, 0].to(masks.dtype)
        return images, masks


SHIFTS = ("brightness", "contrast", "saturation", "zoom")


def parse_shift(spec: str) -> tuple[str, float]:
    """``"brightness=0.7"`` -> ("brightness", 0.7); see :func:`shift_pair` for the kinds.

    Raises:
        ValueError: an unknown kind or a factor that is not a positive number.
    """
    kind, sep, value = spec.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in SHIFTS:
        raise ValueError(f"--shift wants KIND=FACTOR with KIND one of {', '.join(SHIFTS)} (e.g. brightness=0.7), "
                         f"got {spec!r}")
    try:
        factor = float(value)
    except ValueError:
        raise ValueError(f"--shift {kind}: the factor must be a number, got {value!r}") from None
    if not factor > 0 or (kind == "zoom" and factor > 4):
        raise ValueError(f"--shift {kind}: the factor must be > 0{' and <= 4' if kind == 'zoom' else ''}, "
                         f"got {factor}")
    return kind, factor


def shift_pair(image: np.ndarray, mask: np.ndarray, kind: str, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image (H, W[, C]) and its mask as a different camera or exposure would show them.

    - ``brightness``: pixel values times ``factor`` (clipped);
    - ``contrast``: distances from the image's mean value times ``factor``;
    - ``saturation``: distances from each pixel's luma (BT.601) times ``factor`` (RGB only; gray is unchanged);
    - ``zoom``: the scene magnified by ``factor`` about the centre (< 1 shrinks it and mirrors the border in),
      the mask with it (nearest neighbour), same output size.
    """
    if kind == "zoom":
        return _zoom_pair(image, mask, factor)
    x = image.astype(np.float32)
    if kind == "brightness":
        x = x * factor
    elif kind == "contrast":
        m = x.mean()
        x = (x - m) * factor + m
    elif kind == "saturation":
        if x.ndim == 3 and x.shape[-1] == 3:
            luma = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            x = luma + (x - luma) * factor
    else:
        raise ValueError(f"unknown shift {kind!r}; valid: {', '.join(SHIFTS)}")
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), mask


def _zoom_pair(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    h, w = mask.shape[:2]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    msk = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.NEAREST))
    if factor >= 1:  # crop the centre
        top, left = (nh - h) // 2, (nw - w) // 2
        return img[top:top + h, left:left + w].copy(), msk[top:top + h, left:left + w].copy()
    top, left = (h - nh) // 2, (w - nw) // 2
    pad = ((top, h - nh - top), (left, w - nw - left))
    img_pad = pad + ((0, 0),) * (img.ndim - 2)
    return np.pad(img, img_pad, mode="symmetric"), np.pad(msk, pad, mode="symmetric")
