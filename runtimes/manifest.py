"""The artifact manifest: the JSON sidecar every converted model carries, read by every runtime.

A manifest sits beside its artifact as ``<artifact file name>.json`` (``model.onnx`` -> ``model.onnx.json``,
``model.xml`` -> ``model.xml.json``). Runtimes read it and never guess: layout, normalisation, output
activation and threshold all come from here. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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
    """How a frame (or a volume) becomes the model input (applied by ``edgeseg.runtimes.processing``).

    Attributes:
        size: spatial input size (H, W) or, for volumes, the patch size (D, H, W).
        resize: images: "stretch" or "letterbox" (keep aspect ratio, pad); volumes: "sliding-window" (the
            volume is covered by overlapping patches of ``size``).
        mean: per-channel mean on 0-1 scaled RGB (volumes: subtracted after the intensity normalisation;
            0 for none).
        std: per-channel std (volumes: 1 for none).
        color: "rgb" or "gray"; "channels" for volumes with several modalities, in the data's order.
        intensity_clip: volumes: fixed bounds (lo, hi) every volume is clipped to (e.g. a CT window).
        percentiles: volumes without a fixed window: clip each volume to these intensity percentiles
            (neither: to its min and max).
        zscore: volumes: after clipping, subtract the volume's mean and divide by its std (else scale the
            clipped range to 0-1).
    """

    size: list[int]
    resize: str = "stretch"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    color: str = "rgb"
    intensity_clip: list[float] | None = None
    percentiles: list[float] | None = None
    zscore: bool = False

    @property
    def volume(self) -> bool:
        """Whether this describes volume patches (3D) rather than images."""
        return len(self.size) == 3


# what `edgeseg train` does to volumes when no fixed window is given (edgeseg.train.volume_loop.PERCENTILES)
VOLUME_PERCENTILES = (0.5, 99.5)


def volume_preprocessing(record: Mapping[str, Any] | None, in_channels: int,
                         size: list[int] | tuple[int, ...] | None = None) -> Preprocessing:
    """The :class:`Preprocessing` of a 3D model from a checkpoint's volume record (``{"kind": "volume",
    "patch_size", "intensity_clip", "percentiles", "zscore"}``, written by ``edgeseg train``): at ``size``
    (default: the record's patch size), covered by sliding windows. Without a record: what ``edgeseg train``
    does to volumes (0.5-99.5 percentile clip, z-score).

    Raises:
        ValueError: no size given and none recorded.
    """
    rec = dict(record) if isinstance(record, Mapping) and is_volume_record(record) else {}
    size = size or rec.get("patch_size")
    if not size:
        raise ValueError("a volume pre-processing needs the patch size (none given and none recorded)")
    clip = rec.get("intensity_clip")
    pct = None if clip else (rec.get("percentiles") or VOLUME_PERCENTILES)
    return Preprocessing(
        size=[int(s) for s in size],
        resize="sliding-window",
        mean=[0.0] * in_channels,
        std=[1.0] * in_channels,
        color="gray" if in_channels == 1 else "channels",
        intensity_clip=[float(c) for c in clip] if clip else None,
        percentiles=[float(q) for q in pct] if pct else None,
        zscore=bool(rec.get("zscore", True)),
    )


def is_volume_record(record: Mapping[str, Any] | None) -> bool:
    """Whether a checkpoint's pre-processing record describes volume patches (3D)."""
    return isinstance(record, Mapping) and (record.get("kind") == "volume" or "patch_size" in record)


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


_PRE_FIELDS = tuple(f.name for f in fields(Preprocessing))
_PRE_REQUIRED = ("size", "mean", "std")


def parse_preprocessing(value: Preprocessing | Mapping[str, Any] | str | Path) -> Preprocessing:
    """An explicit pre-processing, for an artifact that has no manifest.

    Args:
        value: a :class:`Preprocessing`; a dict of its fields (``size``, ``mean`` and ``std`` required;
            ``resize`` defaults to "stretch", ``color`` to "gray" for one channel, else "rgb"); a JSON object
            as text; or the path of a JSON file holding such an object, or the manifest of another artifact of
            the same model (its ``preprocessing`` is taken).

    Raises:
        ValueError: not JSON, unknown or missing fields, or values of the wrong kind (the message lists the
            fields).
        FileNotFoundError: a path that does not exist.

    Examples:
        >>> parse_preprocessing('{"size": [256, 256], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}')
        >>> parse_preprocessing("exports/ultralightunet-s_fp32.onnx.json")
    """
    if isinstance(value, Preprocessing):
        return value
    where = "the given pre-processing"
    if isinstance(value, (str, Path)):
        text = str(value).strip()
        if not text.startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise FileNotFoundError(f"pre-processing file not found: {path} (give a JSON file or a JSON "
                                        "object such as '{\"size\": [256, 256], \"mean\": [...], \"std\": [...]}')")
            where, text = str(path), path.read_text()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not valid JSON ({exc.msg} at column {exc.colno}); give an object "
                             f"such as '{{\"size\": [256, 256], \"mean\": [...], \"std\": [...]}}'") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a JSON object of {', '.join(_PRE_FIELDS)}, got {type(value).__name__}")
    if isinstance(value.get("preprocessing"), Mapping):  # a manifest (or a checkpoint-like record)
        value = value["preprocessing"]
    unknown = sorted(set(value) - set(_PRE_FIELDS))
    missing = [k for k in _PRE_REQUIRED if k not in value]
    if unknown or missing:
        what = f"unknown field(s) {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
        raise ValueError(f"{where}: {what}; the fields are {', '.join(_PRE_FIELDS)} "
                         f"({', '.join(_PRE_REQUIRED)} required: they cannot be read from a model file)")
    d = dict(value)
    if "color" not in d and isinstance(d["mean"], list):
        d["color"] = "gray" if len(d["mean"]) == 1 else "rgb"
    size = d["size"]
    d["size"] = [int(size)] * 2 if isinstance(size, int) else size
    try:
        pre = Preprocessing(**d)
        pre.size = [int(s) for s in pre.size]
        pre.mean, pre.std = [float(m) for m in pre.mean], [float(s) for s in pre.std]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: size, mean and std must be lists of numbers, got size={d.get('size')!r} "
                         f"mean={d.get('mean')!r} std={d.get('std')!r}") from None
    if len(pre.size) not in (2, 3) or min(pre.size) <= 0:
        raise ValueError(f"{where}: size must be [height, width] (or [depth, height, width]) with positive "
                         f"values, got {pre.size}")
    if len(pre.mean) != len(pre.std) or any(s <= 0 for s in pre.std):
        raise ValueError(f"{where}: mean and std need one value per channel (std > 0), got mean={pre.mean} "
                         f"std={pre.std}")
    return pre


def check_preprocessing(pre: Preprocessing, spec: TensorSpec, artifact: str | Path) -> None:
    """Refuse a pre-processing that does not fit the model's declared input (rank, fixed sizes, channels)."""
    nchw = spec.nchw_shape()
    spatial, channels = nchw[2:], nchw[1]
    if len(pre.size) != len(spatial):
        raise ValueError(f"{artifact}: the pre-processing size {pre.size} is {len(pre.size)}D but the model "
                         f"takes {len(spatial)}D input {nchw}")
    for got, want in zip(pre.size, spatial):
        if want > 0 and got != want:
            raise ValueError(f"{artifact}: the pre-processing size {pre.size} differs from the model's fixed "
                             f"input {nchw}; give size {spatial}")
    if channels <= 0:
        return
    if len(pre.mean) != channels:
        raise ValueError(f"{artifact}: the model takes {channels} channel(s) and the pre-processing has "
                         f"{len(pre.mean)} mean/std value(s); give one per channel")
    want_color = {1: "gray", 3: "rgb"}.get(channels)
    if want_color and not pre.volume and pre.color != want_color:
        raise ValueError(f"{artifact}: the model takes {channels} channel(s), so color must be {want_color!r}, "
                         f"not {pre.color!r}")


def missing_manifest_message(artifact: str | Path) -> str:
    """Why an artifact without a manifest is refused, and the two ways on."""
    return (
        f"{artifact}: no manifest beside it ({manifest_path(artifact).name}), so its pre-processing (size, "
        "mean/std, colour) is unknown and guessing it gives wrong masks silently; re-convert it with "
        "`edgeseg convert`, or give the pre-processing explicitly: --preprocessing '{\"size\": [256, 256], "
        "\"mean\": [...], \"std\": [...]}' (runtimes.load(..., preprocessing={...}))"
    )


def manifest_from_io(
    artifact: str | Path,
    target: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    preprocessing: Preprocessing | None,
) -> Manifest:
    """The manifest of an artifact that has no sidecar: its I/O as the model declares it, and the
    pre-processing the caller gave (required: it cannot be read from the model, and a guess gives wrong
    masks silently). The output activation follows the channel count (1: sigmoid, more: softmax), as for
    every edgeseg model. ``extra["preprocessing"] == "given"`` marks where the description came from.

    Raises:
        ValueError: no pre-processing given, or one that does not fit the model's input.
    """
    if preprocessing is None:
        raise ValueError(missing_manifest_message(artifact))
    check_preprocessing(preprocessing, inputs[0], artifact)
    out_nchw = outputs[0].nchw_shape()
    classes = out_nchw[1] if out_nchw[1] > 0 else 1
    spec = inputs[0]
    return Manifest(
        artifact=Path(str(artifact)).name,
        target=target,
        precision={"int8": "int8", "uint8": "int8", "float16": "fp16"}.get(spec.dtype, "unknown"),
        model="unknown",
        inputs=inputs,
        outputs=outputs,
        preprocessing=preprocessing,
        postprocessing=Postprocessing(activation="sigmoid" if classes == 1 else "softmax", num_classes=classes),
        extra={"manifest": "none beside the artifact: I/O read from the model", "preprocessing": "given"},
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
