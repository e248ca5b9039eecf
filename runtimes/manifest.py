"""The artifact manifest: the JSON sidecar every converted model carries, read by every runtime.

A manifest sits beside its artifact as ``<artifact file name>.json`` (``model.onnx`` -> ``model.onnx.json``,
``model.xml`` -> ``model.xml.json``). Runtimes read it and never guess: layout, normalisation, output
activation and threshold all come from here. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = "edgeseg-artifact/1"
LAYOUTS = ("nchw", "nhwc", "ncdhw", "ndhwc")


@dataclass
class TensorSpec:
    """One input or output tensor as the artifact sees it.

    Attributes:
        name: tensor name inside the artifact.
        shape: full shape in the artifact's own layout; -1 for a dynamic dimension.
        layout: "nchw" / "nhwc" (2D) or "ncdhw" / "ndhwc" (3D), the artifact's own layout.
        dtype: "float32", "float16", "int8" or "uint8" at the artifact boundary.
        scale: quantization scale when dtype is integer (real = scale * (q - zero_point)).
        zero_point: quantization zero point when dtype is integer.
    """

    name: str
    shape: list[int]
    layout: str = "nchw"
    dtype: str = "float32"
    scale: float | None = None
    zero_point: int | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")

    @property
    def channels_last(self) -> bool:
        return self.layout in ("nhwc", "ndhwc")

    def nchw_shape(self) -> list[int]:
        """The shape in channels-first order (what ``Runtime.infer`` takes and returns)."""
        if not self.channels_last:
            return list(self.shape)
        return [self.shape[0], self.shape[-1], *self.shape[1:-1]]


@dataclass
class Preprocessing:
    """How a frame becomes the model input (applied by ``edgeseg.runtimes.processing``).

    Attributes:
        size: spatial input size (H, W) or (D, H, W).
        resize: "stretch" or "letterbox" (keep aspect ratio, pad).
        mean: per-channel mean on 0-1 scaled RGB.
        std: per-channel std.
        color: "rgb" or "gray".
    """

    size: list[int]
    resize: str = "stretch"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    color: str = "rgb"


@dataclass
class Postprocessing:
    """How logits become a mask.

    Attributes:
        activation: "sigmoid" (binary, one channel) or "softmax" (multi-class).
        threshold: probability threshold for binary masks.
        num_classes: output channels.
    """

    activation: str = "sigmoid"
    threshold: float = 0.5
    num_classes: int = 1


@dataclass
class Manifest:
    """Everything a runtime, a benchmark or a reader needs to know about one artifact.

    Attributes:
        artifact: file name of the artifact (relative to the manifest's folder).
        target: "onnx", "openvino", "tflite" or "torch".
        precision: "fp32", "fp16" or "int8".
        model: registry name of the model.
        inputs: input tensor specs (one for segmentation models).
        outputs: output tensor specs.
        preprocessing: see :class:`Preprocessing`.
        postprocessing: see :class:`Postprocessing`.
        model_cfg: the model's ModelCfg as a dict.
        weights: provenance of the weights (path, sha256, "random" when untrained).
        quantization: scheme and its settings (e.g. {"scheme": "static-qdq", "calibration": {...}}).
        parity: figures of the verification against the FP32 torch reference.
        versions: converter and library versions.
        files: sha256 of every file that makes up the artifact, by file name.
        created: ISO-8601 time of conversion.
        extra: anything target-specific.
    """

    artifact: str
    target: str
    precision: str
    model: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    model_cfg: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not an edgeseg manifest (format {d.get('format')!r}, expected {MANIFEST_FORMAT!r})")
        d = dict(d)
        d["inputs"] = [TensorSpec(**t) for t in d["inputs"]]
        d["outputs"] = [TensorSpec(**t) for t in d["outputs"]]
        d["preprocessing"] = Preprocessing(**d["preprocessing"])
        d["postprocessing"] = Postprocessing(**d.get("postprocessing", {}))
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path``."""
        from edgeseg.common.io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: manifest is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: manifest is incomplete or malformed ({exc})") from None


def manifest_path(artifact: str | Path) -> Path:
    """Where the manifest of ``artifact`` lives."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def find_manifest(artifact: str | Path) -> Manifest | None:
    """The manifest beside ``artifact`` or None when there is none."""
    path = manifest_path(artifact)
    return Manifest.load(path) if path.is_file() else None


def manifest_from_io(
    artifact: str | Path,
    target: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    default_size: tuple[int, ...] = (256, 256),
) -> Manifest:
    """A minimal manifest for an artifact that has no sidecar, built from what the model declares.

    Normalisation defaults to ImageNet mean/std, resize to stretch; the output activation follows the
    channel count (1: sigmoid, more: softmax). ``extra["synthesized"]`` marks it as a guess.
    """
    spec = inputs[0]
    nchw = spec.nchw_shape()
    channels = nchw[1] if nchw[1] > 0 else 3
    spatial = [d if d > 0 else s for d, s in zip(nchw[2:], default_size[-len(nchw[2:]):])]
    out_nchw = outputs[0].nchw_shape()
    classes = out_nchw[1] if out_nchw[1] > 0 else 1
    mean = [0.485, 0.456, 0.406] if channels == 3 else [0.5] * channels
    std = [0.229, 0.224, 0.225] if channels == 3 else [0.5] * channels
    return Manifest(
        artifact=Path(str(artifact)).name,
        target=target,
        precision={"int8": "int8", "uint8": "int8", "float16": "fp16"}.get(spec.dtype, "unknown"),
        model="unknown",
        inputs=inputs,
        outputs=outputs,
        preprocessing=Preprocessing(size=spatial, mean=mean, std=std, color="rgb" if channels == 3 else "gray"),
        postprocessing=Postprocessing(activation="sigmoid" if classes == 1 else "softmax", num_classes=classes),
        extra={"synthesized": True},
    )


def check_files(artifact: str | Path, manifest: Manifest) -> None:
    """Refuse an artifact whose files are not the ones its manifest describes (sha256 of each file).

    A few milliseconds for edge-sized models; it catches a swapped, truncated or edited file that would
    otherwise run with the manifest's pre-processing and verified figures vouching for it.

    Raises:
        ValueError: a listed file is missing or its content differs.
    """
    from edgeseg.common.io import sha256_file

    folder = Path(artifact).parent
    for name, digest in (manifest.files or {}).items():
        f = folder / name
        if not f.is_file():
            raise ValueError(f"{f}: missing; the manifest {manifest_path(artifact).name} lists it as part of the "
                             "artifact: copy the whole artifact (every file and the manifest), or re-convert it")
        if sha256_file(f) != digest:
            raise ValueError(
                f"{f}: its content differs from what its manifest records (sha256): the file was modified, "
                "truncated or swapped after conversion, so the manifest's figures do not describe it; re-convert "
                "it (edgeseg convert), or if you changed it on purpose load with check_files=False "
                "(--no-hash-check)"
            )
