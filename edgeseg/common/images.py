"""The one image reader of edgeseg: training, evaluation, prediction, the benchmark and the demo's image files
all decode through :func:`read_image`, so an image is the same array everywhere and a damaged file is refused
everywhere (torch-free; Pillow is a base dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_image(path: str | Path, color: str = "rgb") -> np.ndarray:
    """Decode an image fully into uint8 RGB HxWx3 (``color="rgb"``) or HxW (``color="gray"``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable or truncated file (names the file).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB" if color == "rgb" else "L")
            return np.asarray(im, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ValueError(f"{path}: unreadable (not a readable image: png, jpg, bmp, tif or webp)") from None
    except OSError as exc:
        raise ValueError(f"{path}: unreadable or truncated image file ({exc})") from None
    except Exception as exc:  # PIL raises assorted errors for corrupt data
        raise ValueError(f"{path}: unreadable image file ({type(exc).__name__}: {exc})") from None
