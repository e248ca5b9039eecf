"""What a manifest records about where an artifact came from: weights, pre-processing, library versions."""

from __future__ import annotations

import datetime as _dt
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgeseg.converters.base import Artifact, ConvertConfig
from edgeseg.runtimes.manifest import Manifest, Postprocessing, Preprocessing, volume_preprocessing

from edgeseg.common.io import sha256_file

# distributions whose versions every manifest records (missing ones are left out)
DISTRIBUTIONS = (
    "edgeseg",
    "torch",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "openvino",
    "nncf",
    "litert-torch",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "torchao",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that take part in a conversion."""
    out = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def weights_record(path: Path | None, source: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Provenance of the weights: source ("given", "shipped", "random", "module"), path, sha256, and the
    checkpoint's builder options (``model_kwargs``, e.g. ``skip_attention``), from which it was rebuilt."""
    if path is None:
        return {"source": source, "sha256": "random" if source == "random" else None}
    # shipped weights are named inside the package, not by this machine's install path
    where = f"edgeseg/weights/{path.name}" if source == "shipped" else str(path)
    rec: dict[str, Any] = {"source": source, "path": where, "sha256": sha256_file(path)}
    if (checkpoint or {}).get("model_kwargs"):
        rec["model_kwargs"] = dict(checkpoint["model_kwargs"])
    if source == "shipped":
        from edgeseg.weights import model_card

        card = model_card(path.stem)
        if card is not None:
            rec["model_card"] = card
    return rec


def volume_preprocessing_for(size: tuple[int, ...], checkpoint: dict[str, Any] | None,
                             in_channels: int) -> Preprocessing:
    """A 3D model's pre-processing at patch size ``size``: the checkpoint's volume record (fixed intensity
    window or percentile clip, z-score), else what ``edgeseg train`` does to volumes; see
    :func:`edgeseg.runtimes.manifest.volume_preprocessing`."""
    return volume_preprocessing((checkpoint or {}).get("preprocessing"), in_channels, size)


def preprocessing_for(
    model_cfg: Any, size: tuple[int, ...], checkpoint: dict[str, Any] | None, in_channels: int
) -> Preprocessing:
    """The checkpoint's pre-processing when it has one, else the model config's (at ``size``); for volumes
    (a 3D ``size``) see :func:`volume_preprocessing_for`."""
    if len(size) == 3:
        return volume_preprocessing_for(size, checkpoint, in_channels)
    pre = (checkpoint or {}).get("preprocessing")
    if isinstance(pre, dict) and pre.get("mean") is not None:
        return Preprocessing(
            size=[int(s) for s in size],
            resize=str(pre.get("resize", "stretch")),
            mean=[float(m) for m in pre["mean"]],
            std=[float(s) for s in pre["std"]],
            color=str(pre.get("color", "rgb" if in_channels == 3 else "gray")),
        )
    mean = list(model_cfg.mean)[:in_channels] if in_channels <= len(model_cfg.mean) else [0.5] * in_channels
    std = list(model_cfg.std)[:in_channels] if in_channels <= len(model_cfg.std) else [0.5] * in_channels
    return Preprocessing(
        size=[int(s) for s in size],
        resize="stretch",
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        color="rgb" if in_channels == 3 else "gray",
    )


def build_manifest(
    art: Artifact,
    cfg: ConvertConfig,
    model_name: str,
    model_cfg: dict[str, Any],
    pre: Preprocessing,
    num_classes: int,
    weights: dict[str, Any],
) -> Manifest:
    """The manifest of a freshly converted artifact (parity is filled in after verification)."""
    quant = dict(art.quantization) if art.quantization else {"scheme": "none"}
    extra = dict(art.extra)
    extra.update(
        batch="dynamic" if cfg.batch is None else int(cfg.batch),
        convert_time_s=round(art.convert_time_s, 3),
        size_bytes=art.size_bytes,
    )
    return Manifest(
        artifact=art.path.name,
        target=art.target,
        precision=art.precision,
        model=model_name,
        inputs=art.inputs,
        outputs=art.outputs,
        preprocessing=pre,
        postprocessing=Postprocessing(
            activation="sigmoid" if num_classes == 1 else "softmax", threshold=0.5, num_classes=num_classes
        ),
        model_cfg=json.loads(json.dumps(model_cfg, default=str)),  # as it reads back from disk
        weights=json.loads(json.dumps(weights, default=str)),
        quantization=quant,
        versions={
            "converter": f"converters.{art.target} (edgeseg {library_versions().get('edgeseg', '?')})",
            **library_versions(),
        },
        files={Path(f).name: sha256_file(f) for f in art.files},
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra=extra,
    )
