"""Runtime registry: backend name -> module, and the choice of backend for an artifact.

Adding a backend is one module with a ``Runtime`` subclass plus one line in ``_BACKENDS``. Backend modules
must import without their package (they import it inside ``_load_impl``/``devices``), so that listing what
is available never fails. Torch-free.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any

from edgeseg.runtimes.base import Runtime
from edgeseg.runtimes.manifest import Manifest, find_manifest

# name -> (module, class)
_BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("edgeseg.runtimes.torch_runtime", "TorchRuntime"),
    "onnxruntime": ("edgeseg.runtimes.ort_runtime", "OnnxRuntime"),
    "openvino": ("edgeseg.runtimes.openvino_runtime", "OpenVINORuntime"),
    "litert": ("edgeseg.runtimes.litert_runtime", "LiteRTRuntime"),
}
# artifact target (manifest) -> default backend
TARGET_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert", "torch": "torch"}
SUFFIX_TARGET = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite", ".pt": "torch", ".pth": "torch"}
# which backends can run which targets (onnxruntime cannot run IR; OpenVINO reads ONNX too)
RUNS = {"torch": {"torch"}, "onnxruntime": {"onnx"}, "openvino": {"openvino", "onnx"}, "litert": {"tflite"}}


def list_runtimes() -> list[str]:
    return list(_BACKENDS)


def get_runtime(name: str) -> type[Runtime]:
    """The backend class for ``name``.

    Raises:
        ValueError: unknown name (with the valid ones).
    """
    if name not in _BACKENDS:
        close = difflib.get_close_matches(name, list(_BACKENDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown runtime {name!r}.{hint} Valid: {', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def runtime_info() -> list[dict[str, Any]]:
    """Each backend with availability, version, devices and the extra that installs it."""
    rows = []
    for name in _BACKENDS:
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
    if suffix not in SUFFIX_TARGET:
        raise ValueError(
            f"cannot tell the format of {artifact}: no manifest beside it and unknown suffix {suffix!r} "
            f"(known: {', '.join(SUFFIX_TARGET)}); convert it with `edgeseg convert`"
        )
    return SUFFIX_TARGET[suffix]


def load(
    artifact: str | Path,
    runtime: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    **options: Any,
) -> Runtime:
    """Open an artifact with the right backend and load it.

    Args:
        artifact: path of a converted model (its manifest is read from beside it).
        runtime: backend name; default chosen from the manifest's target (or the file suffix).
        device: "cpu", "gpu", "npu", "auto", ... as the backend lists in ``devices()``.
        threads: intra-op threads.
        **options: backend-specific options.

    Returns:
        A loaded :class:`Runtime`.

    Examples:
        >>> from edgeseg import runtimes
        >>> with runtimes.load("exports/ultralightunet-s_fp32.onnx") as rt:
        ...     logits = rt.infer(batch)
    """
    path = Path(str(artifact))
    if runtime is not None:
        get_runtime(runtime)  # unknown names fail first, with the valid ones
    if not path.exists():
        if runtime == "torch":  # a registered model name; TorchRuntime checks it
            rt = get_runtime("torch")(str(artifact), device=device, threads=threads, **options)
            return rt.load()
        raise FileNotFoundError(f"artifact not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass the artifact file inside it (.onnx, .xml, .tflite, .pt)")
    manifest = find_manifest(path)
    target = target_of(path, manifest)
    if target not in TARGET_RUNTIME:
        raise ValueError(f"{path}: unknown target {target!r} in its manifest (known: {', '.join(TARGET_RUNTIME)})")
    name = runtime or TARGET_RUNTIME[target]
    cls = get_runtime(name)
    if target not in RUNS[name]:
        fits = [r for r, t in RUNS.items() if target in t]
        raise ValueError(f"runtime {name!r} cannot run a {target} artifact; use one of: {', '.join(fits)}")
    rt = cls(path, manifest=manifest, device=device, threads=threads, **options)
    return rt.load()
