"""Training: ``config`` (TrainConfig, VolumeOptions: every option declared once), ``engine`` (Trainer, the one
training engine), ``loop`` (``train()`` and the 2D data), ``volume_loop`` (3D data), ``process``, ``losses``,
``checkpoint``, ``evaluate``, ``ema``, ``ship`` (package weights), ``throughput``.

``from edgeseg.train import Trainer, TrainConfig, train`` works; the names load on first use, so importing the
package (as ``edgeseg train --help`` does, for the config) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"TrainConfig": "config", "VolumeOptions": "config", "Trainer": "engine", "TrainData": "engine",
         "TrainResult": "engine", "train": "loop"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"edgeseg.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgeseg.train' has no attribute {name!r}")
