"""Device-side inference: one Runtime interface over torch, onnxruntime, OpenVINO and LiteRT.

This package imports and runs without torch (a point-of-care device has numpy, a runtime and OpenCV); the
torch reference backend imports torch only when it loads.

Examples:
    >>> from edgeseg import runtimes
    >>> with runtimes.load("exports/ultralightunet-s_fp32.tflite", threads=2) as rt:
    ...     logits = rt.infer(batch)            # float32 NCHW in, NCHW logits out
"""

from edgeseg.runtimes.base import DeviceNotAvailableError, Runtime, RuntimeUnavailableError
from edgeseg.runtimes.manifest import (
    Manifest,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    find_manifest,
    manifest_path,
)
from edgeseg.runtimes.registry import (
    get_runtime,
    list_runtimes,
    load,
    name_runtime,
    runtime_info,
    shipped_artifact,
)

__all__ = [
    "DeviceNotAvailableError",
    "Manifest",
    "Postprocessing",
    "Preprocessing",
    "Runtime",
    "RuntimeUnavailableError",
    "TensorSpec",
    "find_manifest",
    "get_runtime",
    "list_runtimes",
    "load",
    "manifest_path",
    "name_runtime",
    "runtime_info",
    "shipped_artifact",
]
