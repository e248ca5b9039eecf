"""The Runtime interface (in the style of Polygraphy's runners).

Public surface: ``load()``, ``infer(x)``, ``close()``, context manager, ``name``, ``device``, ``manifest``.
``infer`` always takes a float32 channels-first batch (N, C, H, W) or (N, C, D, H, W) and returns
channels-first float32 logits, whatever the artifact uses inside: the base class validates the input against
the manifest and converts layouts; a backend implements only ``_load_impl``, ``_infer_impl`` and
``_close_impl`` (plus the class-level discovery hooks). Torch-free.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from edgeseg.runtimes.manifest import (
    Manifest,
    TensorSpec,
    check_preprocessing,
    missing_manifest_message,
    parse_preprocessing,
)


@dataclass(frozen=True)
class LayerOp:
    """One op of a loaded graph: its name, its name scope (segments, outermost first, as the exporter wrote
    them) and the id of the tensor it writes (what :meth:`Runtime.layer_outputs` reads back)."""

    name: str
    scope: tuple[str, ...]
    tensor: str
    op: str


class RuntimeUnavailableError(ImportError):
    """The backend's package is not installed (the message names the extra to install)."""


class DeviceNotAvailableError(ValueError):
    """The backend cannot use the requested device (the message lists the ones it can)."""


_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8}


def _to_channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _to_channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def to_artifact_dtype(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Cast (float16) or quantize (int8/uint8, with the spec's scale and zero point) a float32 tensor."""
    dtype = _NP_DTYPES.get(spec.dtype)
    if dtype is None:
        raise ValueError(f"unsupported artifact dtype {spec.dtype!r} (supported: {', '.join(_NP_DTYPES)})")
    if dtype in (np.float32, np.float16):
        return x.astype(dtype, copy=False)
    if spec.scale is None or spec.zero_point is None:
        raise ValueError(f"input {spec.name!r} is {spec.dtype} but the manifest has no scale/zero_point")
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(spec.scale)) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def from_artifact_dtype(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float32 view of an artifact output (dequantized when integer)."""
    if np.issubdtype(y.dtype, np.integer):
        if spec.scale is None or spec.zero_point is None:
            raise ValueError(f"output {spec.name!r} is {y.dtype} but the manifest has no scale/zero_point")
        return ((y.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)).astype(np.float32)
    return np.asarray(y, dtype=np.float32)


class Int8CpuWarning(UserWarning):
    """An int8 artifact runs on a CPU whose int8 kernels differ from the ones it was verified on."""


_WARNED: set[str] = set()


def int8_cpu_warning(manifest: Manifest | None) -> str | None:
    """Why this CPU may not reproduce an int8 artifact's verified figures, or None when it should.

    The manifest records the int8 kernels the artifact was quantized for (``quantization.int8_isa``) and the
    CPU it was verified on (``parity.cpu``). Full-range int8 ("vnni") can saturate on x86 CPUs without VNNI;
    any int8 artifact may round differently on another int8 kernel family.
    """
    if manifest is None or manifest.precision != "int8":
        return None
    from edgeseg.runtimes.sysinfo import int8_path, int8_saturates

    here = int8_path()
    verified = (manifest.parity.get("cpu") or {}).get("int8_path")
    name = manifest.artifact
    if manifest.quantization.get("int8_isa") == "vnni" and int8_saturates(here):
        return (
            f"{name}: int8 quantized for CPUs with VNNI (full 8-bit range), but this CPU's int8 path is "
            f"{here!r}, where such products saturate: expect lower accuracy than verified; reconvert with "
            "--int8-isa portable"
        )
    if verified and verified != here:
        return (
            f"{name}: int8 verified on a CPU with int8 path {verified!r}; this one is {here!r}, whose kernels "
            "round differently: re-check it here (edgeseg bench --artifact ...)"
        )
    return None


class Runtime(ABC):
    """One loaded artifact on one device.

    Args:
        artifact: path of the model file (``.onnx``, ``.xml``, ``.tflite``, ``.pt``) or a model name for
            the torch backend.
        manifest: the artifact's manifest (read from beside the artifact when None).
        device: "cpu", "gpu", "npu", "auto" or a backend-specific name; validated against ``devices()``.
        threads: intra-op threads (None: the backend's default).
        **options: backend-specific options (e.g. ``hint="LATENCY"`` for OpenVINO); ``allow_nonfinite=True``
            lets NaN/inf inputs through (by default ``infer`` refuses them: one NaN pixel can empty a mask);
            ``preprocessing`` (a :class:`~edgeseg.runtimes.manifest.Preprocessing`, a dict of its fields, JSON
            text or a JSON file) describes an artifact that has no manifest, which is refused without it.
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""  # pyproject extra that installs the backend
    module: ClassVar[str] = ""  # top-level package the backend needs
    # whether the backend describes what it loads itself (the torch reference: from the checkpoint's record or
    # the model's config); other backends need a manifest or an explicit pre-processing
    describes_itself: ClassVar[bool] = False

    def __init__(
        self,
        artifact: str | Path,
        manifest: Manifest | None = None,
        device: str = "cpu",
        threads: int | None = None,
        **options: Any,
    ):
        self.artifact = artifact
        self.manifest = manifest
        self._device = device
        self.threads = threads
        self.allow_nonfinite = bool(options.pop("allow_nonfinite", False))
        given = options.pop("preprocessing", None)
        self.given_preprocessing = None if given is None else parse_preprocessing(given)
        self.options = options
        self.loaded = False
        self.int8_warning: str | None = None
        self.tuned: dict[str, Any] = {}  # settings runtimes.load took from the manifest's tuned record
        self.load_time_s: float | None = None

    # ---- discovery (class level) ----
    @classmethod
    def is_available(cls) -> bool:
        """Whether the backend's package can be imported here."""
        from edgeseg.common.deps import is_available

        return is_available(cls.module)

    @classmethod
    def version(cls) -> str | None:
        """The backend package's version, or None when missing."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(cls.distribution())
        except PackageNotFoundError:
            return None

    @classmethod
    def distribution(cls) -> str:
        """The pip distribution name of the backend package."""
        return cls.module

    @classmethod
    def devices(cls) -> list[str]:
        """Devices this backend can use on this machine (e.g. ["cpu"], ["cpu", "gpu"])."""
        return ["cpu"]

    @classmethod
    def busy_wait_options(cls, spin: bool) -> dict[str, Any]:
        """Load options that make the backend's worker threads spin (``spin``) or sleep between ops; {} when
        it has no such switch. The benchmark measured why this matters on shared cores."""
        return {}

    @classmethod
    def tuning_space(cls, device: str) -> list[Any]:
        """The settings beyond ``threads`` that :mod:`edgeseg.runtimes.tuning` may search on ``device``, as
        :class:`~edgeseg.runtimes.tuning.Knob` objects (the default value first); [] when there are none.
        Only settings that change speed, never results, belong here."""
        return []

    @classmethod
    def summary(cls, details: dict[str, Any]) -> str:
        """One line of the backend's own words for its devices (providers, device names, delegates), from
        :meth:`details`; "" when it has nothing to add."""
        return ""

    @classmethod
    def details(cls) -> dict[str, Any]:
        """Backend-specific discovery for ``edgeseg devices`` (providers, device names, delegates)."""
        return {}

    # ---- lifecycle ----
    @property
    def device(self) -> str:
        return self._device

    def load(self) -> Runtime:
        """Load the artifact (idempotent); returns self."""
        if self.loaded:
            return self
        if not self.is_available():
            raise RuntimeUnavailableError(
                f"runtime {self.name!r} is not installed: pip install 'edgeseg[{self.extra}]' -c constraints.txt"
            )
        have = self.devices()
        if self._device.lower() not in [d.lower() for d in have]:
            raise DeviceNotAvailableError(
                f"runtime {self.name!r} has no device {self._device!r} on this machine; available: {', '.join(have)}"
            )
        given = self.given_preprocessing
        if self.manifest is None and given is None and not self.describes_itself:
            raise ValueError(missing_manifest_message(self.artifact))  # before any work
        t0 = time.perf_counter()
        self._load_impl()
        self.load_time_s = time.perf_counter() - t0
        try:
            if self.manifest is None:
                # No sidecar: the I/O the loaded model declares, with the pre-processing the caller gave.
                self.manifest = self._describe()
            elif given is not None and self.describes_itself:  # the caller's word over the model's defaults
                check_preprocessing(given, self.manifest.input, self.artifact)
                self.manifest.preprocessing = given
                self.manifest.extra = {**self.manifest.extra, "preprocessing": "given"}
        except BaseException:
            self._close_impl()
            raise
        self.loaded = True
        self.int8_warning = int8_cpu_warning(self.manifest)
        if self.int8_warning and self.int8_warning not in _WARNED:
            _WARNED.add(self.int8_warning)  # once per artifact and CPU, however often it is loaded
            warnings.warn(self.int8_warning, Int8CpuWarning, stacklevel=2)
        return self

    def close(self) -> None:
        """Release the session/interpreter (idempotent; ``infer`` loads again when called)."""
        if self.loaded:
            self._close_impl()
            self.loaded = False

    def __enter__(self) -> Runtime:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- inference ----
    @property
    def input_spec(self) -> TensorSpec:
        if self.manifest is None:
            raise ValueError(f"{self.artifact}: no manifest, the input cannot be validated")
        return self.manifest.input

    @property
    def output_spec(self) -> TensorSpec:
        if self.manifest is None:
            raise ValueError(f"{self.artifact}: no manifest, the output cannot be interpreted")
        return self.manifest.output

    def info(self) -> dict[str, Any]:
        """What this runner is and runs on (for reports): backend, version, device, threads, details."""
        d: dict[str, Any] = {
            "runtime": self.name,
            "version": self.version(),
            "device": self.device,
            "threads": self.threads,
            "artifact": str(self.artifact),
        }
        if self.tuned:
            d["tuned"] = self.tuned
        if self.manifest is not None:
            d.update(target=self.manifest.target, precision=self.manifest.precision,
                     layout=self.manifest.input.layout, input_dtype=self.manifest.input.dtype)
        if self.loaded:
            d.update(self._info_impl())
        return d

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run one batch.

        Args:
            x: float32 (N, C, H, W) or (N, C, D, H, W), normalised as the manifest's preprocessing says.
                Any N works with a batch-1 artifact (samples run one at a time).

        Returns:
            float32 logits, channels-first, (N, num_classes, *spatial).

        Raises:
            ValueError: wrong dtype, rank or shape (the message gives the expected one).
        """
        if not self.loaded:
            self.load()
        x = self._validate(x)
        if self.input_spec.shape[0] == 1 and x.shape[0] > 1:
            # A batch-1 artifact (torch.export specialises the batch): run the batch one sample at a time.
            return np.concatenate([self._infer_one(x[i : i + 1]) for i in range(x.shape[0])])
        return self._infer_one(x)

    def _infer_one(self, x: np.ndarray) -> np.ndarray:
        spec = self.input_spec
        native = _to_channels_last(x) if spec.channels_last else x
        out = self._infer_impl(to_artifact_dtype(native, spec))
        out = from_artifact_dtype(np.asarray(out), self.output_spec)
        if self.output_spec.channels_last:
            out = _to_channels_first(out)
        return out

    __call__ = infer

    # ---- layer taps (edgeseg.converters.layerwise compares them with the torch model's) ----
    layer_notes: ClassVar[list[str]] = []  # how this backend's taps are read, for the report

    def layer_ops(self) -> list[LayerOp]:
        """The loaded graph's ops in execution order, each with its name scope and the tensor it writes.

        Raises:
            NotImplementedError: this backend cannot show its intermediate tensors.
        """
        raise NotImplementedError(f"the {self.name} backend cannot show its layers' tensors (no layer taps)")

    def layer_outputs(self, x: np.ndarray, tensors: list[str]) -> list[np.ndarray | None]:
        """The float32 values of ``tensors`` (ids from :meth:`layer_ops`) for one normalised NCHW sample ``x``,
        dequantized, as the artifact's own kernels computed them, in the backend's own layout (TFLite holds
        intermediates channels-last; :func:`edgeseg.converters.layerwise.explain` aligns them). None: the
        backend could not expose that tensor."""
        if not self.loaded:
            self.load()
        x = self._validate(x)
        if x.shape[0] != 1:
            raise ValueError(f"layer_outputs takes one sample at a time, got a batch of {x.shape[0]}")
        spec = self.input_spec
        native = _to_channels_last(x) if spec.channels_last else x
        unique = list(dict.fromkeys(tensors))  # a block and its last layer can end on the same tensor
        values = dict(zip(unique, self._tap_impl(to_artifact_dtype(native, spec), unique)))
        return [None if values[t] is None else np.asarray(values[t], dtype=np.float32) for t in tensors]

    # ---- per-op profile (edgeseg.benchmarks.profile) ----
    def profile_ops(self, x: np.ndarray, runs: int = 20) -> list[dict[str, Any]]:
        """The backend's own per-op timings for one normalised NCHW sample ``x``, averaged over ``runs``
        (after a warm-up): ``[{"name", "op", "ms"}]``, slowest first.

        Raises:
            NotImplementedError: this backend has no op profiler edgeseg can read.
        """
        if not self.loaded:
            self.load()
        x = self._validate(x)[:1]
        spec = self.input_spec
        native = to_artifact_dtype(_to_channels_last(x) if spec.channels_last else x, spec)
        rows = self._profile_impl(native, int(runs))
        return sorted(rows, key=lambda r: -r["ms"])

    def _profile_impl(self, x: np.ndarray, runs: int) -> list[dict[str, Any]]:
        raise NotImplementedError(f"the {self.name} backend has no op profiler edgeseg can read")

    def _tap_impl(self, x: np.ndarray, tensors: list[str]) -> list[np.ndarray | None]:
        raise NotImplementedError(f"the {self.name} backend cannot show its layers' tensors (no layer taps)")

    def _validate(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ValueError(f"infer takes a float32 numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ValueError(
                f"infer takes float32 input, got {x.dtype}; pre-process with edgeseg.runtimes.processing.preprocess "
                "(or x.astype(np.float32))"
            )
        finite = None if self.allow_nonfinite else np.isfinite(x)
        if finite is not None and not finite.all():
            bad = int(x.size - np.count_nonzero(finite))
            raise ValueError(
                f"infer input holds {bad} NaN/inf value(s): a frame or its pre-processing is broken (one NaN "
                "pixel can empty the whole mask); fix the input, or load with allow_nonfinite=True"
            )
        expected = self.input_spec.nchw_shape()
        layout = "NCDHW" if len(expected) == 5 else "NCHW"
        if x.ndim != len(expected):
            raise ValueError(f"expected a {layout} batch of rank {len(expected)} with shape {expected}, "
                             f"got shape {list(x.shape)}")
        for axis, (got, want) in enumerate(zip(x.shape, expected)):
            if axis == 0 and want == 1:
                continue  # batches are split for batch-1 artifacts
            if want not in (-1, None) and got != want:
                hint = ""
                channels = expected[1]
                if channels not in (-1, None) and x.shape[1] != channels and x.shape[-1] == channels:
                    perm = (0, x.ndim - 1, *range(1, x.ndim - 1))
                    hint = f"; this looks channels-last: infer takes {layout}, use np.transpose(x, {perm})"
                raise ValueError(
                    f"expected input shape {expected} ({layout}, -1 = any), got {list(x.shape)}{hint}"
                )
        return x

    # ---- backend hooks ----
    @abstractmethod
    def _load_impl(self) -> None:
        """Create the session/interpreter/compiled model."""

    @abstractmethod
    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        """Run ``x`` (the artifact's own layout and dtype); return the raw output (artifact layout and dtype)."""

    def _close_impl(self) -> None:
        """Release resources (default: nothing)."""

    def _describe(self) -> Manifest:
        """The manifest of an artifact that has none: the loaded model's I/O and ``given_preprocessing``
        (backends override, with :func:`~edgeseg.runtimes.manifest.manifest_from_io`)."""
        raise ValueError(missing_manifest_message(self.artifact))

    def _info_impl(self) -> dict[str, Any]:
        """Backend details for :meth:`info` (providers, delegates, precision hints...)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(artifact={str(self.artifact)!r}, device={self.device!r})"
