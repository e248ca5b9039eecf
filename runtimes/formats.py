"""Artifact formats: one record per format, registered once and read by every part (torch-free).

A :class:`Format` says everything the project knows about one kind of artifact: its name (the manifest's
``target`` and ``--target``), its file suffixes (the main file first, then the files that travel with it),
the runtime backend that runs it (and which other formats that backend also runs), and, when it is a
conversion target, what the converter can make (:class:`TargetSpec`) and where the converter lives.

The runtimes registry, the converters, ``edgeseg devices`` and the benchmark harness all read these records;
none of them keeps its own table of formats. Adding a format is its runtime module (``edgeseg/runtimes``),
its converter module (``edgeseg/converters``: torch-side, so the device never imports it) and one
``Format(...)`` entry in :data:`FORMATS`: the ExecuTorch entry shows the whole of it. Backend-specific behaviour (device summaries, busy-wait options)
lives on the backend's :class:`~edgeseg.runtimes.base.Runtime` class.

Examples:
    >>> from edgeseg.runtimes.formats import get_format, format_of_suffix
    >>> get_format("openvino").companions
    ('.bin',)
    >>> format_of_suffix(".tflite").runtime
    'litert'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "int8")
LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class TargetSpec:
    """What the converter of one format can make (data, not code paths).

    Attributes:
        name: the format's name (also the manifest's ``target``).
        suffix: file suffix of the main artifact file.
        precisions: precisions the converter produces.
        int8_schemes: "static" (calibrated activations) and/or "dynamic" (int8 weights, activations
            quantized at run time).
        layouts: input/output layouts it can give the artifact ("nhwc" = channels-last I/O).
        default_layout: layout when none is asked for.
        calib_methods: activation-range estimators for static int8 (first = default).
        quantizers: int8 tool choices.
        default_quantizer: the int8 tool used for each scheme when none is asked for.
        dynamic_batch: whether the artifact can take any batch size.
        spatial_dims: 2 (images) and/or 3 (volumes).
        accuracy_control: whether int8 can be searched under a max Dice drop (needs labelled data).
        extra: pyproject extra that installs the converter's packages.
        modules: packages the converter imports.
        runtime: the runtime backend that verifies the artifact.
        impl: "module:Class" of the converter.
        notes: known limits, quoted in errors.
        convert_cost: relative conversion time (ultralightunet-s int8 at 256 px on the 2-core development
            machine, onnx = 1): parallel conversion (``--jobs``) starts the slowest targets first.
    """

    name: str
    suffix: str
    precisions: tuple[str, ...]
    int8_schemes: tuple[str, ...]
    layouts: tuple[str, ...]
    default_layout: str
    calib_methods: tuple[str, ...]
    quantizers: tuple[str, ...]
    default_quantizer: dict[str, str]
    dynamic_batch: bool
    spatial_dims: tuple[int, ...]
    accuracy_control: bool
    extra: str
    modules: tuple[str, ...]
    runtime: str
    impl: str
    notes: str = ""
    convert_cost: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if k != "impl"}


@dataclass(frozen=True)
class Format:
    """One artifact format.

    Attributes:
        name: format name: the manifest's ``target`` and the CLI's ``--target``.
        suffixes: suffixes of the main file (the first is the one converters write); a file without a manifest
            is recognised by them.
        companions: suffixes of the files beside the main one, with its stem, that belong to the artifact
            (OpenVINO's ``.bin``).
        runtime: the backend that runs it by default (its name, a key of :data:`RUNTIMES`).
        runtime_impl: "module:Class" of that backend's :class:`~edgeseg.runtimes.base.Runtime` subclass.
        runs_also: other formats that this format's backend runs too (OpenVINO reads ONNX).
        target: the conversion capabilities, or None when edgeseg does not convert to it (checkpoints).
    """

    name: str
    suffixes: tuple[str, ...]
    runtime: str
    runtime_impl: str
    companions: tuple[str, ...] = ()
    runs_also: tuple[str, ...] = ()
    target: TargetSpec | None = None

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def files(self, main: str | Path) -> list[Path]:
        """The files of an artifact whose main file is ``main``: its companions that exist, then ``main``."""
        main = Path(main)
        return [main.with_suffix(s) for s in self.companions if main.with_suffix(s).is_file()] + [main]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(name="torch", suffixes=(".pt", ".pth"), runtime="torch",
               runtime_impl="edgeseg.runtimes.torch_runtime:TorchRuntime"),
        Format(
            name="onnx",
            suffixes=(".onnx",),
            runtime="onnxruntime",
            runtime_impl="edgeseg.runtimes.ort_runtime:OnnxRuntime",
            target=TargetSpec(
                name="onnx",
                suffix=".onnx",
                precisions=PRECISIONS,
                int8_schemes=("static", "dynamic"),
                layouts=LAYOUTS,
                default_layout="nchw",
                calib_methods=("minmax", "entropy", "percentile"),
                quantizers=("ort",),
                default_quantizer={"static": "ort", "dynamic": "ort"},
                dynamic_batch=True,
                spatial_dims=(2, 3),
                accuracy_control=True,
                extra="onnx",
                modules=("onnx", "onnxruntime", "onnxscript"),
                runtime="onnxruntime",
                impl="edgeseg.converters.onnx_converter:OnnxConverter",
            ),
        ),
        Format(
            name="openvino",
            suffixes=(".xml",),
            companions=(".bin",),
            runtime="openvino",
            runtime_impl="edgeseg.runtimes.openvino_runtime:OpenVINORuntime",
            runs_also=("onnx",),
            target=TargetSpec(
                name="openvino",
                suffix=".xml",
                precisions=PRECISIONS,
                int8_schemes=("static",),
                layouts=LAYOUTS,
                default_layout="nchw",
                calib_methods=("auto",),
                quantizers=("nncf",),
                default_quantizer={"static": "nncf"},
                dynamic_batch=True,
                spatial_dims=(2, 3),
                accuracy_control=True,
                extra="openvino",
                modules=("openvino", "nncf"),
                runtime="openvino",
                impl="edgeseg.converters.openvino_converter:OpenVINOConverter",
                convert_cost=2.5,  # 9.5 s onnx, 24-27 s openvino (with its budget search), 60-70 s tflite
            ),
        ),
        Format(
            name="tflite",
            suffixes=(".tflite",),
            runtime="litert",
            runtime_impl="edgeseg.runtimes.litert_runtime:LiteRTRuntime",
            target=TargetSpec(
                name="tflite",
                suffix=".tflite",
                precisions=PRECISIONS,
                int8_schemes=("static", "dynamic"),
                layouts=LAYOUTS,
                default_layout="nhwc",
                calib_methods=("auto",),
                quantizers=("pt2e", "aeq"),
                default_quantizer={"static": "pt2e", "dynamic": "aeq"},
                dynamic_batch=False,
                spatial_dims=(2,),
                accuracy_control=True,
                extra="tflite",
                modules=("litert_torch", "ai_edge_quantizer", "ai_edge_litert"),
                runtime="litert",
                impl="edgeseg.converters.tflite_converter:TFLiteConverter",
                convert_cost=7.0,
                notes=(
                    "3D: litert-torch 0.10 rejects grouped Conv3D (UltraLightUNet3D: needs TF Select ops) and "
                    "writes STABLEHLO_CONVOLUTION for UNETR, which ai-edge-litert 2.3 cannot run"
                ),
            ),
        ),
        Format(
            name="executorch",
            suffixes=(".pte",),
            runtime="executorch",
            runtime_impl="edgeseg.runtimes.executorch_runtime:ExecuTorchRuntime",
            target=TargetSpec(
                name="executorch",
                suffix=".pte",
                precisions=("fp32", "int8"),
                int8_schemes=("static",),
                layouts=("nchw",),
                default_layout="nchw",
                calib_methods=("auto",),
                quantizers=("xnnpack",),
                default_quantizer={"static": "xnnpack"},
                dynamic_batch=False,
                spatial_dims=(2,),
                accuracy_control=False,
                extra="executorch",
                modules=("executorch",),
                runtime="executorch",
                impl="edgeseg.converters.executorch_converter:ExecuTorchConverter",
                convert_cost=6.0,  # 57.7 s at 300 calibration images (issue 14's notes)
                notes="2D only: not tried on 3D models",
            ),
        ),
    )
}


# backend name -> "module:Class" of its Runtime subclass (each backend owns one format)
RUNTIMES: dict[str, str] = {f.runtime: f.runtime_impl for f in FORMATS.values()}


def unknown(kind: str, value: str, valid: list[str] | tuple[str, ...], where: str = "") -> ValueError:
    """A ValueError for an unknown name, with "did you mean" and the valid names."""
    close = difflib.get_close_matches(value, list(valid), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {value!r}{where}.{hint} Valid: {', '.join(valid)}")


def get_format(name: str) -> Format:
    """The record of format ``name``.

    Raises:
        ValueError: unknown name (with the valid ones).
    """
    if name not in FORMATS:
        raise unknown("format", name, list(FORMATS))
    return FORMATS[name]


def target_formats() -> list[Format]:
    """The formats edgeseg converts to, in registry order."""
    return [f for f in FORMATS.values() if f.target is not None]


def format_of_suffix(suffix: str) -> Format | None:
    """The format whose main file has ``suffix`` (case-insensitive), or None."""
    suffix = suffix.lower()
    return next((f for f in FORMATS.values() if suffix in f.suffixes), None)


def runtimes_for(fmt: str) -> list[str]:
    """The backends that can run format ``fmt``: its own first, then those that run it too."""
    own = [FORMATS[fmt].runtime] if fmt in FORMATS else []
    return own + [f.runtime for f in FORMATS.values() if fmt in f.runs_also and f.runtime not in own]
