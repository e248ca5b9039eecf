"""The conversion contract: target capabilities as data, a self-validating config, a converter base class.

A target's capabilities (:class:`TargetSpec`) are part of its format record in
:mod:`edgeseg.runtimes.formats`; adding a target is its converter module (a :class:`Converter` subclass)
plus that record. Nothing else in the package switches on the target name. A converter writes its artifact at
the path it is given (a staging path: :mod:`edgeseg.converters.staging` moves finished files into place and writes the
manifest last) and returns an :class:`Artifact` describing what it wrote.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgeseg.runtimes.formats import LAYOUTS, PRECISIONS, TargetSpec, target_formats  # noqa: F401 (re-exported)
from edgeseg.runtimes.formats import unknown as _choices
from edgeseg.runtimes.manifest import TensorSpec

if TYPE_CHECKING:
    from edgeseg.converters.calibration import CalibrationSet

INT8_SCHEMES = ("static", "dynamic")
# int8 kernels the artifact is quantized for: "portable" avoids the int16 saturation of x86 CPUs without VNNI
# (same numbers on every x86 int8 path), "vnni" uses the full 8-bit range (CPUs with int8 dot products:
# x86 VNNI/AMX, Arm dotprod/i8mm); "auto" picks for this CPU (see edgeseg.runtimes.sysinfo.int8_path)
INT8_ISAS = ("auto", "portable", "vnni")


TARGETS: dict[str, TargetSpec] = {f.name: f.target for f in target_formats() if f.target is not None}


def resolve_int8_isa(isa: str) -> str:
    """ "portable" or "vnni": "auto" becomes "portable" where this CPU's int8 kernels saturate, else "vnni"."""
    if isa != "auto":
        return isa
    from edgeseg.runtimes.sysinfo import int8_saturates

    return "portable" if int8_saturates() else "vnni"


def list_targets() -> list[str]:
    """Registered target names."""
    return list(TARGETS)


def get_target(name: str) -> TargetSpec:
    """The capabilities of a target.

    Raises:
        ValueError: unknown target (with the valid ones).
    """
    if name not in TARGETS:
        raise _choices("target", name, list(TARGETS))
    return TARGETS[name]


def get_converter(name: str) -> Converter:
    """An instance of the converter for target ``name``."""
    spec = get_target(name)
    module, cls = spec.impl.split(":")
    return getattr(importlib.import_module(module), cls)()


@dataclass(frozen=True)
class ConvertConfig:
    """One conversion, validated when built (never a silent default for a wrong combination).

    Args:
        target: "onnx", "openvino" or "tflite".
        precision: "fp32", "fp16" or "int8".
        input_size: spatial input size, (H, W) or (D, H, W).
        in_channels: input channels.
        batch: fixed batch size, or None for a dynamic batch (targets with ``dynamic_batch`` only).
        layout: "nchw" or "nhwc" (channels-last I/O; "ncdhw"/"ndhwc" for volumes); None: the target's default.
        int8_scheme: "static" (needs calibration) or "dynamic".
        calib_method: activation-range estimator (``TargetSpec.calib_methods``); None: the target's default.
        quantizer: int8 tool (see ``TargetSpec.quantizers``); None: the target's default.
        calibration: calibration images (required by static int8).
        max_dice_drop: the int8 accuracy budget: the largest Dice drop against the FP32 model allowed on the
            held-back images (``convert_model`` keeps the most sensitive layers in float until it holds).
        keep_float: torch module paths (layers, see :mod:`edgeseg.converters.layerwise`) that static int8
            leaves in float.
        int8_isa: "auto" (this CPU's int8 kernels), "portable" or "vnni" (see :data:`INT8_ISAS`); "auto" is
            resolved when the config is built, so ``cfg.int8_isa`` is always "portable" or "vnni".
        opset: ONNX opset.
        exporter: ONNX exporter, "torchscript" or "dynamo".
        simplify: fold constants / remove dead nodes in the ONNX graph.

    Raises:
        ValueError: unknown target/precision/layout/scheme, a combination the target cannot make, or static
            int8 without calibration data.

    Examples:
        >>> ConvertConfig(target="tflite", precision="fp32", input_size=(256, 256))
        >>> ConvertConfig(target="onnx", precision="int8")   # ValueError: no calibration data
    """

    target: str
    precision: str = "fp32"
    input_size: tuple[int, ...] = (256, 256)
    in_channels: int = 3
    batch: int | None = 1
    layout: str | None = None
    int8_scheme: str = "static"
    calib_method: str | None = None
    quantizer: str | None = None
    calibration: CalibrationSet | None = field(default=None, repr=False, compare=False)
    max_dice_drop: float | None = None
    keep_float: tuple[str, ...] = ()
    int8_isa: str = "auto"
    opset: int = 17
    exporter: str = "torchscript"
    simplify: bool = True

    def __post_init__(self) -> None:
        spec = get_target(self.target)
        if self.precision not in spec.precisions:
            raise _choices("precision", self.precision, spec.precisions, f" for target {self.target!r}")
        dims = len(self.input_size)
        if dims not in (2, 3) or any(int(s) <= 0 for s in self.input_size):
            raise ValueError(f"input_size must be 2 or 3 positive sizes, got {list(self.input_size)}")
        if dims not in spec.spatial_dims:
            why = f" ({spec.notes})" if spec.notes else ""
            raise ValueError(
                f"target {self.target!r} cannot convert {dims}D models{why}; use one of "
                f"{', '.join(n for n, s in TARGETS.items() if dims in s.spatial_dims)}"
            )
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        layout = (self.layout or spec.default_layout).lower()
        layout = {"ncdhw": "nchw", "ndhwc": "nhwc"}.get(layout, layout)
        if layout not in spec.layouts:
            raise _choices("layout", layout, spec.layouts, f" for target {self.target!r}")
        object.__setattr__(self, "layout", layout)
        if self.batch is None:
            if not spec.dynamic_batch:
                raise ValueError(
                    f"target {self.target!r} needs a fixed batch size (its converter specialises "
                    "the batch dimension); pass --batch N"
                )
        elif int(self.batch) < 1:
            raise ValueError(f"batch must be >= 1 or dynamic, got {self.batch}")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.int8_scheme not in INT8_SCHEMES:
            raise _choices("int8 scheme", self.int8_scheme, INT8_SCHEMES)
        if self.precision == "int8" and self.int8_scheme not in spec.int8_schemes:
            raise _choices("int8 scheme", self.int8_scheme, spec.int8_schemes, f" for target {self.target!r}")
        method = (self.calib_method or spec.calib_methods[0]).lower()
        if method not in spec.calib_methods:
            raise _choices("calibration method", method, spec.calib_methods, f" for target {self.target!r}")
        object.__setattr__(self, "calib_method", method)
        quantizer = (
            self.quantizer or spec.default_quantizer.get(self.int8_scheme, spec.quantizers[0])
        ).lower()
        if quantizer not in spec.quantizers:
            raise _choices("quantizer", quantizer, spec.quantizers, f" for target {self.target!r}")
        object.__setattr__(self, "quantizer", quantizer)
        isa = str(self.int8_isa).lower()
        if isa not in INT8_ISAS:
            raise _choices("int8 ISA", isa, INT8_ISAS)
        object.__setattr__(self, "int8_isa", resolve_int8_isa(isa))
        if self.exporter not in ("torchscript", "dynamo"):
            raise _choices("ONNX exporter", self.exporter, ("torchscript", "dynamo"))
        if self.opset < 17:
            raise ValueError(f"opset must be >= 17, got {self.opset}")
        if self.static_int8:
            if self.calibration is None or len(self.calibration) == 0:
                raise ValueError(
                    "static int8 needs calibration data: pass --calib IMAGE_FOLDER or --calib synthetic "
                    "(or --int8-scheme dynamic, which needs none)"
                )
            shape = tuple(self.calibration.images.shape[1:])
            if shape != (self.in_channels, *self.input_size):
                raise ValueError(
                    f"calibration images are {list(shape)}, the model takes "
                    f"{[self.in_channels, *self.input_size]}"
                )
        if self.max_dice_drop is not None:
            if self.precision != "int8" or not spec.accuracy_control:
                able = [n for n, s in TARGETS.items() if s.accuracy_control]
                raise ValueError(f"--max-dice-drop applies to int8 on {', '.join(able)} only")
            if not 0 < self.max_dice_drop < 1:
                raise ValueError(f"max_dice_drop must be in (0, 1), got {self.max_dice_drop}")
        object.__setattr__(self, "keep_float", tuple(str(k) for k in self.keep_float))
        if self.keep_float and not self.static_int8:
            raise ValueError("keep_float (layers left in float) applies to static int8 only")

    @property
    def spec(self) -> TargetSpec:
        return get_target(self.target)

    @property
    def static_int8(self) -> bool:
        return self.precision == "int8" and self.int8_scheme == "static"

    @property
    def channels_last(self) -> bool:
        return self.layout == "nhwc"

    @property
    def manifest_layout(self) -> str:
        """The layout name the manifest uses ("nchw"/"nhwc" for images, "ncdhw"/"ndhwc" for volumes)."""
        if len(self.input_size) == 3:
            return "ndhwc" if self.channels_last else "ncdhw"
        return self.layout or "nchw"

    @property
    def tag(self) -> str:
        """File-name tag: precision, plus the int8 scheme when dynamic."""
        return (
            "int8-dynamic" if self.precision == "int8" and self.int8_scheme == "dynamic" else self.precision
        )

    def calibration_batches(self) -> list[Any]:
        """The calibration images as float32 batches of the artifact's batch size, in its layout (a dynamic
        batch calibrates with batch 1; a remainder smaller than a batch is left out).

        Raises:
            ValueError: no calibration data, or fewer images than one batch.
        """
        import numpy as np

        if self.calibration is None:  # __post_init__ guarantees it for static int8
            raise ValueError("static int8 needs calibration data")
        batch = 1 if self.batch is None else int(self.batch)
        images = np.moveaxis(self.calibration.images, 1, -1) if self.channels_last else self.calibration.images
        n = len(images) - len(images) % batch
        if n == 0:
            raise ValueError(f"need at least {batch} calibration images for batch {batch}")
        return [np.ascontiguousarray(images[i : i + batch], np.float32) for i in range(0, n, batch)]

    def nchw_shape(self, batch: int | None = None) -> list[int]:
        """Channels-first input shape (-1 for a dynamic batch)."""
        b = batch if batch is not None else (-1 if self.batch is None else int(self.batch))
        return [b, self.in_channels, *self.input_size]

    def artifact_shape(self, channels: int) -> list[int]:
        """Shape of a tensor with ``channels`` channels in the artifact's own layout."""
        b = -1 if self.batch is None else int(self.batch)
        if self.channels_last:
            return [b, *self.input_size, channels]
        return [b, channels, *self.input_size]



@dataclass
class Artifact:
    """What a converter wrote.

    Attributes:
        path: the main file (``.onnx``, ``.xml``, ``.tflite``).
        target: target name.
        precision: "fp32", "fp16" or "int8".
        files: every file that makes up the artifact (main file last), e.g. ``.bin`` then ``.xml``.
        inputs: input tensor specs as the artifact declares them.
        outputs: output tensor specs.
        quantization: scheme and settings ({} for fp32).
        extra: target-specific facts (exporter, opset, ops, notes).
        convert_time_s: wall time of the conversion.
    """

    path: Path
    target: str
    precision: str
    files: list[Path]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    convert_time_s: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(Path(f).stat().st_size for f in self.files if Path(f).exists())


class Converter(ABC):
    """Base class of the per-target converters.

    Subclasses set ``target`` and implement :meth:`_convert`; :meth:`convert` checks the packages, the
    config and times the work.
    """

    target: ClassVar[str] = ""

    @property
    def spec(self) -> TargetSpec:
        return get_target(self.target)

    def check_available(self) -> None:
        """Raise MissingDependencyError (naming the extra) when a needed package is missing."""
        from edgeseg.common.deps import MissingDependencyError, is_available

        for mod in self.spec.modules:
            if not is_available(mod):
                raise MissingDependencyError(
                    f"converting to {self.target} needs the Python package {mod!r}, which is not installed: "
                    f"pip install 'edgeseg[{self.spec.extra}]' -c constraints.txt"
                )

    def convert(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: str | Path) -> Artifact:
        """Convert ``model`` (an eval-mode ``nn.Module``) to ``out_path``.

        Args:
            model: the torch model, in eval mode.
            sample: an example input tensor, channels-first, shaped as ``cfg.nchw_shape``.
            cfg: the validated configuration (its target must be this converter's).
            out_path: where to write the main file (more files may be written beside it).

        Returns:
            The :class:`Artifact` written.
        """
        if cfg.target != self.target:
            raise ValueError(f"{type(self).__name__} converts to {self.target!r}, not {cfg.target!r}")
        self.check_available()
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            art = self._convert(model, sample, cfg, out_path)
        except Exception as exc:  # a full device says so in one line, naming the file (it is not kept)
            from edgeseg.common.io import NO_SPACE_ERRNOS, write_error

            staging = out_path.parent.name.startswith(f".{out_path.name}.staging-")
            failed = write_error(exc, out_path.parent.parent / out_path.name if staging else out_path)
            if failed is None or failed.errno not in NO_SPACE_ERRNOS:
                raise
            raise failed from exc
        art.convert_time_s = time.perf_counter() - t0
        return art

    @abstractmethod
    def _convert(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: Path) -> Artifact:
        """Write the artifact; return its description."""


def channels_last_wrapper(model: Any) -> Any:
    """Wrap ``model`` so it takes and returns channels-last tensors (NHWC / NDHWC); numerics unchanged."""
    import torch

    class ChannelsLastIO(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            nd = x.dim()
            x = x.permute(0, nd - 1, *range(1, nd - 1))
            y = self.inner(x)
            return y.permute(0, *range(2, nd), 1)

    return ChannelsLastIO(model).eval()


def to_layout(sample: Any, cfg: ConvertConfig) -> Any:
    """A channels-first tensor in the artifact's layout."""
    if not cfg.channels_last:
        return sample
    nd = sample.dim()
    return sample.permute(0, *range(2, nd), 1).contiguous()
