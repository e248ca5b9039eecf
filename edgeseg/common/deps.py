"""Optional dependencies and the extras that install them (torch-free, used by every package)."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# top-level module -> pyproject extra that provides it
EXTRAS: dict[str, str] = {
    "torch": "train",
    "tqdm": "train",
    "scipy": "train",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "openvino": "openvino",
    "nncf": "openvino",
    "litert_torch": "tflite",
    "ai_edge_litert": "tflite",
    "ai_edge_quantizer": "tflite",
    "tflite_runtime": "tflite",
    "executorch": "executorch",
    "cv2": "app",
    "monai": "3d",
    "einops": "3d",
    "nibabel": "3d",
    "matplotlib": "bench",
    "yaml": "core",
}


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module.split(".")[0])
    if extra is None or extra == "core":
        return f"pip install {module.split('.')[0]}"
    return f"pip install 'edgeseg[{extra}]' -c constraints.txt"


def missing_message(module: str, what: str = "") -> str:
    need = f"{what} needs" if what else "this needs"
    return f"{need} the Python package {module.split('.')[0]!r}, which is not installed: {install_hint(module)}"


def is_available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, what: str = "") -> ModuleType:
    """Import an optional dependency or raise :class:`MissingDependencyError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        root = (exc.name or module).split(".")[0]
        raise MissingDependencyError(missing_message(root, what)) from exc


def quiet_third_party_logs() -> None:
    """Silence start-up chatter of the converter stacks that says nothing about the user's job.

    TensorFlow's C++ INFO lines (oneDNN notice, op counts), torchao's "Failed to load <CUDA kernel .so>"
    warnings on CPU-only machines and torch's pytree deprecation notices. Environment variables are only set
    when the user has not set them, so ``TF_CPP_MIN_LOG_LEVEL=0`` still brings everything back; errors are
    never hidden.
    """
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow C++: warnings and errors only
    if os.environ.get("EDGESEG_DEBUG"):
        return
    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)
