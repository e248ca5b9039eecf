"""Clips on disk: a folder of frames, the true mask of each frame, and a ``clip.json`` that says what it is.

Layout (what :func:`write_clip` writes)::

    CLIP_DIR/clip.json          {"format": "edgeseg-clip", "fps": 30.0, "frames": N, "size": [H, W], ...}
    CLIP_DIR/frames/000000.png  RGB frames, lossless
    CLIP_DIR/masks/000000.png   the true mask of each frame (0 / 255)

:func:`open_clip` also reads a folder that only holds frames (``frames/`` or the images themselves, in
natural order: ``2.png`` before ``10.png``), with or without ``masks/``. The demo plays such folders
(``edgeseg demo --source CLIP_DIR``) and ``edgeseg evaluate --video CLIP_DIR`` scores a model on them.

Torch-free (numpy and Pillow).

Examples:
    >>> from edgeseg.common.camera import pan_on_clip
    >>> from edgeseg.common.clips import open_clip, write_clip
    >>> write_clip("clips/polyp-00", pan_on_clip(image, mask, n_frames=120), fps=30.0)
    >>> clip = open_clip("clips/polyp-00")
    >>> frame, truth = clip.read(0)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ClipFrame = tuple[np.ndarray, np.ndarray, dict[str, Any]]
CLIP_FORMAT = "edgeseg-clip"
CLIP_VERSION = 1
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def write_clip(folder: str | Path, frames: Iterable[ClipFrame], fps: float = 30.0,
               meta: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a clip as ``frames/NNNNNN.png``, ``masks/NNNNNN.png`` (0 / 255) and ``clip.json``.

    The folder is built under a hidden name beside ``folder`` and renamed into place once whole, so an
    interrupted write never leaves a clip that looks complete.

    Args:
        folder: the clip folder to create.
        frames: ``(frame, mask, info)`` triples (as :func:`camera_clip` yields them).
        fps: the clip's frame rate (players pace at it; delays in ms are counted at it).
        meta: more facts for ``clip.json`` (where the frames came from, segments).
        overwrite: replace an existing clip folder (never a folder that is not a clip).

    Raises:
        ValueError: no frames, frames of different sizes, ``fps`` not positive, or ``folder`` exists.
        WriteError: the device filled up (nothing is left behind).
    """
    from PIL import Image

    from edgeseg.common.io import write_error

    folder = Path(folder)
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if folder.exists():
        if not (folder / "clip.json").is_file():
            raise ValueError(f"{folder} exists and is not a clip folder (no clip.json); choose a new folder")
        if not overwrite:
            raise ValueError(f"{folder} already holds a clip; choose a new folder or overwrite it (--overwrite)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
    try:
        (staging / "frames").mkdir()
        (staging / "masks").mkdir()
        infos: list[dict[str, Any]] = []
        shape = None
        for i, (frame, mask, info) in enumerate(frames):
            if shape is None:
                shape = frame.shape[:2]
            if frame.shape[:2] != shape or mask.shape != shape:
                raise ValueError(f"frame {i} is {frame.shape[:2]} with a {mask.shape} mask; every frame of a clip "
                                 f"is {shape}")
            Image.fromarray(frame).save(staging / "frames" / f"{i:06d}.png", compress_level=1)
            Image.fromarray((mask > 0).astype(np.uint8) * 255).save(staging / "masks" / f"{i:06d}.png")
            infos.append(_plain(info))
        if shape is None:
            raise ValueError("no frames to write: the clip would be empty")
        doc = {"format": CLIP_FORMAT, "version": CLIP_VERSION, "fps": float(fps), "frames": len(infos),
               "size": [int(shape[0]), int(shape[1])], **_plain(meta or {})}
        # one line per frame's facts: readable, and a clip of thousands of frames stays small
        text = json.dumps(doc, indent=1)[:-2] + ',\n "frame_info": [\n  ' + ",\n  ".join(
            json.dumps(i, separators=(",", ":")) for i in infos) + "\n ]\n}\n"
        (staging / "clip.json").write_text(text)
        if folder.exists():  # overwrite: the old clip goes only once the new one is whole
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        failed = write_error(exc, folder)
        if failed is not None and failed is not exc:
            raise failed from exc
        raise
    return folder


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _natural(p: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", p.name)]


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                   and not p.name.startswith(".")), key=_natural)


@dataclass
class ClipFolder:
    """A clip on disk: its frames in order, their true masks (when it has them) and its frame rate.

    Attributes:
        root: the folder.
        frames: frame files in playing order.
        masks: the mask file of each frame, or None (a folder of frames only).
        fps: frames per second (``clip.json``'s, else the one asked for, else 30).
        meta: ``clip.json`` (empty for a folder of frames only).
    """

    root: Path
    frames: list[Path]
    masks: list[Path] | None
    fps: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame ``i`` (RGB uint8) and its mask (uint8 0/1, or None)."""
        from edgeseg.common.images import read_image

        frame = read_image(self.frames[i])
        if self.masks is None:
            return frame, None
        mask = (read_image(self.masks[i], color="gray") > 127).astype(np.uint8)
        if mask.shape != frame.shape[:2]:
            raise ValueError(f"{self.masks[i]} is {mask.shape}, its frame {self.frames[i].name} "
                             f"{frame.shape[:2]}; a mask has its frame's size")
        return frame, mask

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for i in range(len(self)):
            yield self.read(i)

    def segments(self) -> list[dict[str, Any]]:
        """The parts the clip was cut from (``clip.json``'s ``segments``; one part when it has none)."""
        return list(self.meta.get("segments") or [{"start": 0, "frames": len(self)}])


def is_clip_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder :func:`open_clip` can play (a clip, or a folder with frames)."""
    p = Path(path)
    if not p.is_dir():
        return False
    return (p / "clip.json").is_file() or (p / "frames").is_dir() or any(
        q.suffix.lower() in IMAGE_EXTS for q in p.iterdir())


def open_clip(folder: str | Path, fps: float | None = None) -> ClipFolder:
    """A clip written by :func:`write_clip`, or any folder of frames (``frames/`` or the folder itself).

    Args:
        folder: the clip folder.
        fps: the frame rate of a folder without ``clip.json`` (default 30).

    Raises:
        FileNotFoundError: no such folder, or no frames in it.
        ValueError: a damaged clip (fewer frames than ``clip.json`` says, a frame without its mask).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no such clip folder: {root}")
    meta: dict[str, Any] = {}
    if (root / "clip.json").is_file():
        try:
            meta = json.loads((root / "clip.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{root / 'clip.json'}: not valid JSON ({exc}); write the clip again") from None
    frame_dir = root / "frames" if (root / "frames").is_dir() else root
    frames = _images(frame_dir)
    if not frames:
        raise FileNotFoundError(f"no frames in {root}: expected clip.json with frames/000000.png ..., or a folder "
                                f"of images ({', '.join(IMAGE_EXTS)})")
    if meta.get("frames") is not None and int(meta["frames"]) != len(frames):
        raise ValueError(f"{root}: clip.json says {meta['frames']} frames but {frame_dir.name}/ holds "
                         f"{len(frames)}; the clip is incomplete, write it again")
    masks = None
    if (root / "masks").is_dir():
        by_stem = {p.stem: p for p in _images(root / "masks")}
        missing = [f.name for f in frames if f.stem not in by_stem]
        if missing:
            raise ValueError(f"{root}: {len(missing)} frame(s) without a mask in masks/ (first: {missing[0]}); "
                             "give every frame its mask, or remove masks/ to play the frames alone")
        masks = [by_stem[f.stem] for f in frames]
    rate = float(meta.get("fps") or fps or 30.0)
    if rate <= 0:
        raise ValueError(f"{root}: fps must be positive, got {rate}")
    return ClipFolder(root, frames, masks, rate, meta)
