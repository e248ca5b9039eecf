"""edgeseg: lightweight medical image segmentation from training to point-of-care devices.

``import edgeseg`` is light: the torch-based API (models, profiling) loads on first use, so the device-side
CLI commands run where torch is absent.

Examples:
    >>> import edgeseg
    >>> edgeseg.list_models("ultralightunet*")
    >>> model = edgeseg.create_model("ultralightunet-s")
    >>> edgeseg.profile("ultralightunet-s", 256).gflops
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "edgeseg.models",
    "list_models": "edgeseg.models",
    "get_model_cfg": "edgeseg.models",
    "register_model": "edgeseg.models",
    "ModelCfg": "edgeseg.models",
    "profile": "edgeseg.profiling",
    "Profile": "edgeseg.profiling",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
