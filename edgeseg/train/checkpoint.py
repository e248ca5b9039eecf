"""Checkpoints written by training: ``best.pt`` (weights + metadata) and ``last.pt`` (+ the state to resume).

Both follow the format documented in :mod:`edgeseg.weights` (``"edgeseg-checkpoint/1"``). ``last.pt`` adds
``train_state`` (epoch, optimizer, scheduler, AMP scaler, RNG, history, best so far), which ``--resume``
needs to continue an interrupted run exactly. Files are written atomically.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from edgeseg import __version__
from edgeseg.common.io import atomic_path
from edgeseg.weights import CHECKPOINT_FORMAT, read_checkpoint


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights as contiguous CPU tensors, unwrapped from DDP and ``torch.compile``."""
    core = getattr(model, "module", model)  # DDP
    core = getattr(core, "_orig_mod", core)  # torch.compile
    # contiguous NCHW copies, so a channels_last training run still loads anywhere
    return {k: v.detach().to("cpu").contiguous() for k, v in core.state_dict().items()}


def build_checkpoint(model: torch.nn.Module, name: str, model_kwargs: dict[str, Any],
                     preprocessing: dict[str, Any], metrics: dict[str, Any],
                     recipe: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (weights + metadata, no training state)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": name,
        "model_kwargs": dict(model_kwargs),
        "state_dict": cpu_state_dict(model),
        "preprocessing": dict(preprocessing),
        "metrics": dict(metrics),
        "recipe": dict(recipe),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"edgeseg": __version__, "torch": torch.__version__},
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` ``ckpt`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_resume_state(path: str | Path, model_name: str) -> dict[str, Any]:
    """Read ``last.pt`` for ``--resume``; refuse a checkpoint of another model or one without training state.

    Raises:
        FileNotFoundError: no ``last.pt``.
        ValueError: another model's checkpoint, or no training state in it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist (drop --resume to start a new run)")
    ckpt = read_checkpoint(path)
    saved = ckpt.get("model")
    if saved != model_name:
        raise ValueError(f"{path}: checkpoint is for model {saved!r}, not {model_name!r}; "
                         f"use --model {saved} or another --out folder")
    if "train_state" not in ckpt:
        raise ValueError(f"{path}: holds weights only, no training state to resume from")
    return ckpt


def shrink_for_shipping(src: str | Path, dest: str | Path, extra_metrics: dict[str, Any] | None = None) -> Path:
    """Copy a training checkpoint without its training state (what ships in ``edgeseg/weights``)."""
    ckpt = read_checkpoint(src)
    ckpt.pop("train_state", None)
    if extra_metrics:
        ckpt["metrics"] = {**ckpt.get("metrics", {}), **extra_metrics}
    return save_checkpoint(ckpt, dest)
