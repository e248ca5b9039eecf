"""Runtime registry: backend name -> class, and the choice of backend for an artifact.

Backends and the formats they run are the records of :mod:`edgeseg.runtimes.formats`. Backend modules
must import without their package (they import it inside ``_load_impl``/``devices``), so that listing what
is available never fails. Torch-free.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeseg.runtimes.base import Runtime
from edgeseg.runtimes.formats import FORMATS, RUNTIMES, format_of_suffix, runtimes_for, unknown
from edgeseg.runtimes.manifest import (
    Manifest,
    Preprocessing,
    find_manifest,
    manifest_path,
    parse_preprocessing,
)
from edgeseg.runtimes.manifest import check_files as check_manifest_files

_SHIPPED = Path(__file__).resolve().parent / "artifacts"


def shipped_artifact(model: str) -> Path | None:
    """The verified artifact shipped in the package for a registered model name (runs without torch), or None.

    Shipped artifacts live in ``edgeseg/runtimes/artifacts/`` with their manifests: an fp32 ONNX file of each
    model with shipped weights, converted from those weights and verified against them.
    """
    if not model or "/" in model or "\\" in model:
        return None
    found = sorted(_SHIPPED.glob(f"{model}_*.onnx"))
    return found[0] if found else None


def name_runtime(runtime: str | None) -> str | None:
    """The runtime a bare model name (``--model NAME``) runs on: the one asked for; else the torch reference
    where torch is installed, and where it is not (a device), None: the artifact shipped for the model."""
    if runtime is not None:
        return runtime
    from edgeseg.common.deps import is_available

    return "torch" if is_available("torch") else None


def list_runtimes() -> list[str]:
    return list(RUNTIMES)


def get_runtime(name: str) -> type[Runtime]:
    """The backend class for ``name``.

    Raises:
        ValueError: unknown name (with the valid ones).
    """
    if name not in RUNTIMES:
        raise unknown("runtime", name, list(RUNTIMES))
    module, cls = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def runtime_info() -> list[dict[str, Any]]:
    """Each backend with availability, version, devices and the extra that installs it."""
    rows = []
    for name in RUNTIMES:
        cls = get_runtime(name)
        ok = cls.is_available()
        row: dict[str, Any] = {"name": name, "available": ok, "extra": cls.extra, "version": cls.version()}
        if ok:
            try:
                row["devices"] = cls.devices()
                row["details"] = cls.details()
            except Exception as exc:  # a broken install must not break the listing
                row["available"] = False
                row["error"] = f"{type(exc).__name__}: {exc}"
                row["devices"] = []
        else:
            row["devices"] = []
            row["install"] = f"pip install 'edgeseg[{cls.extra}]' -c constraints.txt"
        rows.append(row)
    return rows


def target_of(artifact: str | Path, manifest: Manifest | None) -> str:
    if manifest is not None:
        return manifest.target
    suffix = Path(str(artifact)).suffix.lower()
    fmt = format_of_suffix(suffix)
    if fmt is None:
        known = [s for f in FORMATS.values() for s in f.suffixes]
        raise ValueError(
            f"cannot tell the format of {artifact}: no manifest beside it and unknown suffix {suffix!r} "
            f"(known: {', '.join(known)}); convert it with `edgeseg convert`"
        )
    return fmt.name


def load(
    artifact: str | Path,
    runtime: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    check_files: bool = True,
    preprocessing: Preprocessing | Mapping[str, Any] | str | Path | None = None,
    tuned: bool = True,
    **options: Any,
) -> Runtime:
    """Open an artifact with the right backend and load it.

    Args:
        artifact: path of a converted model (its manifest is read from beside it); or a registered model
            name, which runs the verified artifact shipped for it (no torch needed), or with
            ``runtime="torch"`` the FP32 torch reference.
        runtime: backend name; default chosen from the manifest's target (or the file suffix).
        device: "cpu", "gpu", "npu", "auto", ... as the backend lists in ``devices()``.
        threads: intra-op threads.
        check_files: refuse the artifact when its files differ from the sha256 its manifest records.
        preprocessing: for an artifact without a manifest (refused otherwise: its pre-processing cannot be read
            from the model file): a :class:`Preprocessing`, a dict of its fields (``size``, ``mean``, ``std``;
            optional ``resize``, ``color``), that as JSON text, or a JSON file (another artifact's manifest
            works). With the torch runtime it replaces the checkpoint's or the model config's; an artifact
            that has a manifest refuses it.
        tuned: apply the settings ``edgeseg tune`` recorded in the manifest for this machine, backend and
            device (:mod:`edgeseg.runtimes.tuning`), under whatever ``threads`` and options are given here;
            ``rt.tuned`` says which took effect.
        **options: backend-specific options.

    Returns:
        A loaded :class:`Runtime`.

    Examples:
        >>> from edgeseg import runtimes
        >>> with runtimes.load("exports/ultralightunet-s_fp32.onnx") as rt:
        ...     logits = rt.infer(batch)
        >>> rt = runtimes.load("ultralightunet-s")              # the shipped artifact, on any device
        >>> rt = runtimes.load("third_party.onnx", preprocessing={"size": [256, 256], "mean": [0.5] * 3,
        ...                                                        "std": [0.5] * 3})   # no manifest
    """
    path = Path(str(artifact))
    if runtime is not None:
        get_runtime(runtime)  # unknown names fail first, with the valid ones
    if preprocessing is not None:
        options["preprocessing"] = parse_preprocessing(preprocessing)  # a malformed one fails before any load
    if not path.exists():
        if runtime == "torch":  # a registered model name; TorchRuntime checks it
            rt = get_runtime("torch")(str(artifact), device=device, threads=threads, **options)
            return rt.load()
        shipped = shipped_artifact(str(artifact))
        if shipped is None:
            from edgeseg.common.deps import install_hint

            raise FileNotFoundError(
                f"artifact not found: {path} (a model name runs from the artifact shipped for it, and none is "
                f"shipped for {str(artifact)!r}, or on the torch reference: runtime='torch', which needs "
                f"{install_hint('torch')})"
            )
        path = shipped
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass the artifact file inside it (.onnx, .xml, .tflite, .pt)")
    manifest = find_manifest(path)
    if manifest is not None and preprocessing is not None:
        raise ValueError(
            f"{path} has a manifest ({manifest_path(path).name}) with the pre-processing it was converted and "
            "verified with; drop the explicit pre-processing (--preprocessing), or edit the manifest"
        )
    if manifest is not None and check_files:
        check_manifest_files(path, manifest)
    target = target_of(path, manifest)
    if target not in FORMATS:
        raise ValueError(f"{path}: unknown target {target!r} in its manifest (known: {', '.join(FORMATS)})")
    name = runtime or FORMATS[target].runtime
    cls = get_runtime(name)
    fits = runtimes_for(target)
    if name not in fits:
        raise ValueError(f"runtime {name!r} cannot run a {target} artifact; use one of: {', '.join(fits)}")
    applied: dict[str, Any] = {}
    if tuned:
        from edgeseg.runtimes.tuning import merge_settings, tuned_settings

        threads, options, applied = merge_settings(tuned_settings(manifest, name, device), threads, options)
    rt = cls(path, manifest=manifest, device=device, threads=threads, **options)
    rt.tuned = applied
    return rt.load()
