"""The options of one ``convert_model`` call, in three frozen groups that validate themselves when built.

- :class:`ExportOptions`: the artifact's shape and graph (input size, batch, layout, ONNX exporter/opset);
- :class:`QuantOptions`: int8 (calibration data, scheme, range estimator, tool, target int8 kernels, budget);
- :class:`VerifyOptions`: the parity check against the FP32 torch model.

Each check here needs neither the model nor any data, so a wrong option fails before any work. What depends
on the target (a layout it cannot give, a quantizer it does not have) is checked by
:class:`~edgeseg.converters.base.ConvertConfig`, built from these groups for every target x precision.

Benchmark jobs and suite files name options flat (``{"quantizer": "aeq", "verify_size": 8}``):
:func:`split_options` maps each flat name to its group, through the one table :data:`FLAT_NAMES`.

Examples:
    >>> from edgeseg.converters import ExportOptions, QuantOptions, convert_model
    >>> convert_model("ultralightunet-s", "onnx", "int8", quant=QuantOptions(calib="synthetic"))
    >>> convert_model("ultralightunet-s", "openvino", export=ExportOptions(img_size=352, batch=None))
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from edgeseg.converters.base import INT8_ISAS, INT8_SCHEMES, LAYOUTS
from edgeseg.converters.calibration import DEFAULT_CALIB_SIZE, DEFAULT_VERIFY_SIZE
from edgeseg.runtimes.formats import unknown as _unknown

EXPORTERS = ("torchscript", "dynamo")


@dataclass(frozen=True)
class ExportOptions:
    """How the graph is exported.

    Args:
        img_size: spatial input size (an int for square/cubic, or a tuple); None: the size the weights were
            trained at (the checkpoint's pre-processing record), else the model's.
        batch: fixed batch size, or None for a dynamic batch (ONNX, OpenVINO).
        layout: "nchw" or "nhwc" I/O; None: the target's default (TFLite nhwc, others nchw).
        exporter: ONNX exporter, "torchscript" or "dynamo".
        opset: ONNX opset (>= 17).
        simplify: fold constants and remove dead nodes in the ONNX graph.
        name: file-name stem of the artifacts; None: the model name.
        tta: a test-time augmentation mode the artifact carries in its graph (``"hflip"``, ``"flips"``, ...;
            see :mod:`edgeseg.common.tta`): the model is wrapped before export, verified as wrapped, and the
            manifest records it under ``model_cfg["tta"]``. None: none.
        rewrites: exact deploy-time rewrites applied to a copy of the model before export (see
            :mod:`edgeseg.converters.rewrites`); None: the target's default set, () or "none": none; a
            comma-separated string is read as a list (``--convert-option openvino.rewrites=fold-shuffle``).
    """

    img_size: int | tuple[int, ...] | None = None
    batch: int | None = 1
    layout: str | None = None
    exporter: str = "torchscript"
    opset: int = 17
    simplify: bool = True
    name: str | None = None
    tta: str | None = None
    rewrites: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rewrites, str):  # "fold-shuffle,split-one-channel-convs" from a flag or a suite; "none"
            names = tuple(n.strip() for n in self.rewrites.split(",") if n.strip())
            object.__setattr__(self, "rewrites", () if names in ((), ("none",)) else names)
        elif self.rewrites is not None:
            object.__setattr__(self, "rewrites", tuple(self.rewrites))
        if self.tta is not None:
            from edgeseg.common.tta import parse_tta

            parse_tta(self.tta)  # an unknown mode fails here, with the valid ones
        if self.img_size is not None:
            sizes = (self.img_size,) if isinstance(self.img_size, int) else tuple(self.img_size)
            if not sizes or any(int(s) <= 0 for s in sizes):
                raise ValueError(f"img_size must be positive, got {self.img_size}")
        if self.batch is not None and int(self.batch) < 1:
            raise ValueError(f"batch must be >= 1 or None (dynamic), got {self.batch}")
        if self.layout is not None:
            low = self.layout.lower()
            if {"ncdhw": "nchw", "ndhwc": "nhwc"}.get(low, low) not in LAYOUTS:
                raise _unknown("layout", self.layout, LAYOUTS)
            object.__setattr__(self, "layout", low)
        if self.exporter not in EXPORTERS:
            raise _unknown("ONNX exporter", self.exporter, EXPORTERS)
        if int(self.opset) < 17:
            raise ValueError(f"opset must be >= 17, got {self.opset}")
        if self.name is not None and (not self.name or "/" in self.name or "\\" in self.name):
            raise ValueError(f"name is a file-name stem without folders, got {self.name!r}")


@dataclass(frozen=True)
class QuantOptions:
    """How int8 artifacts are quantized (ignored for fp32/fp16).

    Args:
        calib: calibration source for static int8: an image folder or "synthetic". It also supplies the
            held-back verification images (its val split / held-out part).
        calib_size: calibration images (a warning below 100).
        scheme: "static" (calibrated activations) or "dynamic" (activations quantized at run time).
        calib_method: ONNX activation-range estimator: "minmax", "entropy" or "percentile".
        quantizer: TFLite int8 tool: "pt2e" or "aeq" (ai-edge-quantizer).
        isa: int8 kernels to quantize for: "auto" (this CPU), "portable" (no int16 saturation on x86 CPUs
            without VNNI; the same numbers on every x86 int8 path) or "vnni" (full 8-bit range).
        max_dice_drop: the int8 accuracy budget: the largest Dice drop against the FP32 model allowed on the
            held-back images (:mod:`edgeseg.converters.budget` keeps the most sensitive layers in float until
            it holds). None: 0.01 on every target that can search (``TargetSpec.accuracy_control``); a value
            set here is an error on a target that cannot.
        budget: False turns the budget off (int8 is kept whatever its drop, as long as it passes parity).
        keep_float: layers (torch module paths, as ``--explain`` names them) that static int8 leaves in float
            on every target; the budget's search adds to them.
    """

    calib: str | Path | None = None
    calib_size: int = DEFAULT_CALIB_SIZE
    scheme: str = "static"
    calib_method: str | None = None
    quantizer: str | None = None
    isa: str = "auto"
    max_dice_drop: float | None = None
    budget: bool = True
    keep_float: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.scheme not in INT8_SCHEMES:
            raise _unknown("int8 scheme", self.scheme, INT8_SCHEMES)
        if str(self.isa).lower() not in INT8_ISAS:
            raise _unknown("int8 ISA", self.isa, INT8_ISAS)
        object.__setattr__(self, "isa", str(self.isa).lower())
        object.__setattr__(self, "keep_float", tuple(str(k) for k in self.keep_float))
        if int(self.calib_size) < 1:
            raise ValueError(f"calib_size must be >= 1, got {self.calib_size}")
        if self.max_dice_drop is not None and not 0 < self.max_dice_drop < 1:
            raise ValueError(f"max_dice_drop must be in (0, 1), got {self.max_dice_drop}")

    @property
    def static(self) -> bool:
        return self.scheme == "static"

    def budget_for(self, spec: Any, precision: str) -> float | None:
        """The Dice-drop budget of one artifact (None: no budget)."""
        from edgeseg.converters.budget import DEFAULT_MAX_DROP

        if precision != "int8" or not self.static or not self.budget:
            return None
        if self.max_dice_drop is not None:
            return float(self.max_dice_drop)  # ConvertConfig refuses it where the target cannot search
        return DEFAULT_MAX_DROP if spec.accuracy_control else None


@dataclass(frozen=True)
class VerifyOptions:
    """The parity check of each artifact against the FP32 torch model, through ``edgeseg.runtimes``.

    Args:
        enabled: verify (an artifact that fails is refused).
        images: held-back verification images.
        threads: runtime threads while verifying.
    """

    enabled: bool = True
    images: int = DEFAULT_VERIFY_SIZE
    threads: int | None = None

    def __post_init__(self) -> None:
        if int(self.images) < 1:
            raise ValueError(f"the verification needs at least 1 image, got {self.images}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


# flat option name (benchmark jobs, suite files) -> (group, field)
FLAT_NAMES: dict[str, tuple[str, str]] = {
    **{f.name: ("export", f.name) for f in fields(ExportOptions)},
    "calib": ("quant", "calib"),
    "calib_size": ("quant", "calib_size"),
    "int8_scheme": ("quant", "scheme"),
    "calib_method": ("quant", "calib_method"),
    "quantizer": ("quant", "quantizer"),
    "int8_isa": ("quant", "isa"),
    "max_dice_drop": ("quant", "max_dice_drop"),
    "budget": ("quant", "budget"),
    "keep_float": ("quant", "keep_float"),
    "verify": ("verify", "enabled"),
    "verify_size": ("verify", "images"),
    "threads": ("verify", "threads"),
}


def split_options(
    flat: dict[str, Any],
    export: ExportOptions | None = None,
    quant: QuantOptions | None = None,
    verify: VerifyOptions | None = None,
) -> tuple[ExportOptions, QuantOptions, VerifyOptions]:
    """The three groups with the flat ``{name: value}`` options applied over ``export``/``quant``/``verify``.

    Raises:
        ValueError: an unknown name (with the valid ones) or a value its group refuses.
    """
    groups: dict[str, dict[str, Any]] = {"export": {}, "quant": {}, "verify": {}}
    for key, value in flat.items():
        if key not in FLAT_NAMES:
            raise _unknown("conversion option", key, list(FLAT_NAMES))
        group, name = FLAT_NAMES[key]
        groups[group][name] = value
    return (
        replace(export or ExportOptions(), **groups["export"]),
        replace(quant or QuantOptions(), **groups["quant"]),
        replace(verify or VerifyOptions(), **groups["verify"]),
    )
