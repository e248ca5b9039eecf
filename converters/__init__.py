"""torch -> ONNX | OpenVINO IR | TFLite conversion, fp32/fp16/int8, verified against the FP32 reference.

Examples:
    >>> from edgeseg.converters import convert_model
    >>> results = convert_model("ultralightunet-s", target="tflite")            # fp32, verified, manifest
    >>> results = convert_model("ultralightunet-s", "all", "all", quant=QuantOptions(calib="synthetic"))
"""

from __future__ import annotations

from typing import Any

from edgeseg.converters.base import (
    PRECISIONS,
    TARGETS,
    Artifact,
    ConvertConfig,
    Converter,
    TargetSpec,
    get_converter,
    get_target,
    list_targets,
)
from edgeseg.converters.options import ExportOptions, QuantOptions, VerifyOptions, split_options

__all__ = [
    "PRECISIONS",
    "TARGETS",
    "Artifact",
    "ConvertConfig",
    "ConvertResult",
    "Converter",
    "ExportOptions",
    "QuantOptions",
    "VerifyOptions",
    "split_options",
    "TargetSpec",
    "convert_model",
    "get_converter",
    "get_target",
    "list_targets",
]


def __getattr__(name: str) -> Any:
    # the flat API pulls in torch-side helpers: load it on first use
    if name in ("convert_model", "ConvertResult"):
        from edgeseg.converters import api

        return getattr(api, name)
    raise AttributeError(f"module 'converters' has no attribute {name!r}")
