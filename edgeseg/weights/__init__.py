"""Weights shipped inside the package and the loader shared by every entry point.

Shipped weights live beside this file as ``<model-name>.pt`` (an edgeseg checkpoint) with a model card
``<model-name>.json`` (data, split, recipe, epochs, time, validation Dice). Nothing is downloaded.

Checkpoint format (``torch.save`` of a dict), written by ``edgeseg.train``:
``{"format": "edgeseg-checkpoint/1", "model": name, "model_kwargs": {...}, "state_dict": {...},
"preprocessing": {...}, "metrics": {...}, "recipe": {...}}``. A bare ``state_dict`` (e.g. the authors'
MK-UNet release) is accepted too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHECKPOINT_FORMAT = "edgeseg-checkpoint/1"
_HERE = Path(__file__).resolve().parent


def shipped_weights(name: str) -> Path | None:
    """Path of the weights shipped for ``name``, or None."""
    path = _HERE / f"{name}.pt"
    return path if path.is_file() else None


def list_shipped() -> list[str]:
    """Names of the models that have shipped weights."""
    return sorted(p.stem for p in _HERE.glob("*.pt"))


def model_card(name: str) -> dict[str, Any] | None:
    """The model card of the shipped weights for ``name``, or None."""
    path = _HERE / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file into a dict with at least ``state_dict`` (and ``model`` when known).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable torch checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and all(hasattr(v, "shape") for v in obj.values()):
        return {"state_dict": obj}
    raise ValueError(f"{path}: neither an edgeseg checkpoint nor a state_dict")


def load_weights(model, path: str | Path, expected_model: str | None = None) -> dict[str, Any]:
    """Load ``path`` into ``model`` with ``strict=True``; returns the checkpoint dict.

    Raises:
        ValueError: the checkpoint is for another model, or its tensors do not fit this model.
    """
    ckpt = read_checkpoint(path)
    saved = ckpt.get("model")
    if expected_model is not None and saved is not None and saved != expected_model:
        raise ValueError(
            f"{path}: checkpoint is for model {saved!r}, not {expected_model!r}; "
            f"use --model {saved} or another checkpoint"
        )
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(
            f"{path}: weights do not fit {expected_model or type(model).__name__} "
            f"({' '.join(first[:2])[:300]})"
        ) from None
    return ckpt
