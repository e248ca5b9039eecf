"""The Runtime interface (in the style of Polygraphy's runners).

Public surface: ``load()``, ``infer(x)``, ``close()``, context manager, ``name``, ``device``, ``manifest``.
``infer`` always takes a float32 channels-first batch (N, C, H, W) or (N, C, D, H, W) and returns
channels-first float32 logits, whatever the artifact uses inside: the base class validates the input against
the manifest and converts layouts; a backend implements only ``_load_impl``, ``_infer_impl`` and
``_close_impl`` (plus the class-level discovery hooks). Torch-free.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from runtimes.manifest import Manifest, TensorSpec


class RuntimeUnavailableError(ImportError):
    """The backend's package is not installed (the message names the extra to install)."""


class DeviceNotAvailableError(ValueError):
    """The backend cannot use the requested device (the message lists the ones it can)."""


def _to_channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _to_channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


class Runtime(ABC):
    """One loaded artifact on one device.

    Args:
        artifact: path of the model file (``.onnx``, ``.xml``, ``.tflite``, ``.pt``) or a model name for
            the torch backend.
        manifest: the artifact's manifest (read from beside the artifact when None).
        device: "cpu", "gpu", "npu", "auto" or a backend-specific name; validated against ``devices()``.
        threads: intra-op threads (None: the backend's default).
        **options: backend-specific options (e.g. ``hint="LATENCY"`` for OpenVINO).
    """

    name: ClassVar[str] = ""
    extra: ClassVar[str] = ""  # pyproject extra that installs the backend
    module: ClassVar[str] = ""  # top-level package the backend needs

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
        self.options = options
        self.loaded = False
        self.load_time_s: float | None = None

    # ---- discovery (class level) ----
    @classmethod
    def is_available(cls) -> bool:
        """Whether the backend's package can be imported here."""
        from edgeseg._deps import is_available

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
        t0 = time.perf_counter()
        self._load_impl()
        self.load_time_s = time.perf_counter() - t0
        self.loaded = True
        return self

    def close(self) -> None:
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

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run one batch.

        Args:
            x: float32 (N, C, H, W) or (N, C, D, H, W), normalised as the manifest's preprocessing says.

        Returns:
            float32 logits, channels-first, (N, num_classes, *spatial).

        Raises:
            ValueError: wrong dtype, rank or shape (the message gives the expected one).
        """
        if not self.loaded:
            self.load()
        x = self._validate(x)
        spec = self.input_spec
        native = _to_channels_last(x) if spec.channels_last else x
        out = self._infer_impl(native)
        out = np.asarray(out, dtype=np.float32)
        if self.manifest is not None and self.manifest.output.channels_last:
            out = _to_channels_first(out)
        return out

    def _validate(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ValueError(f"infer takes a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ValueError(
                f"infer takes float32 input, got {x.dtype}; pre-process with runtimes.processing.preprocess "
                "(or x.astype(np.float32))"
            )
        expected = self.input_spec.nchw_shape()
        layout = "NCDHW" if len(expected) == 5 else "NCHW"
        if x.ndim != len(expected):
            raise ValueError(f"expected a {layout} batch of rank {len(expected)} with shape {expected}, "
                             f"got shape {list(x.shape)}")
        for got, want in zip(x.shape, expected):
            if want not in (-1, None) and got != want:
                raise ValueError(f"expected input shape {expected} ({layout}, -1 = any), got {list(x.shape)}")
        return x

    # ---- backend hooks ----
    @abstractmethod
    def _load_impl(self) -> None:
        """Create the session/interpreter/compiled model."""

    @abstractmethod
    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        """Run float32 ``x`` in the artifact's own layout; return float32 logits in the artifact's layout."""

    def _close_impl(self) -> None:
        """Release resources (default: nothing)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(artifact={str(self.artifact)!r}, device={self.device!r})"
