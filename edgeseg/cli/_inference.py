"""Inference helpers that ``edgeseg evaluate`` and ``edgeseg predict`` share: test-time augmentation around a
runner, whole volumes by sliding windows, and a runner seen as a torch module (for evaluation).

Nothing here imports torch at module level: ``predict --artifact`` stays torch-free (a device has numpy, a
runtime, OpenCV and, for volumes, nibabel).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.common.sliding import sliding_window, window_of
from edgeseg.common.tta import TTASpec, parse_tta, tta_predict

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DEFAULT_OVERLAP = 0.25  # what training validates with (TrainConfig.volume.sw_overlap)


def carried_tta(manifest: Any) -> dict[str, Any] | None:
    """The test-time augmentation an artifact carries in its graph (``edgeseg convert --tta``), or None."""
    tta = (getattr(manifest, "model_cfg", None) or {}).get("tta")
    return tta if isinstance(tta, dict) else None


class TTARunner:
    """A runner whose ``infer`` averages the views of a :class:`TTASpec` (numpy; see
    :func:`edgeseg.common.tta.tta_predict`). Everything else is the wrapped runner's."""

    def __init__(self, runner: Any, spec: TTASpec):
        self.runner, self.spec = runner, spec

    def infer(self, x: np.ndarray) -> np.ndarray:
        return tta_predict(self.runner.infer, x, self.spec)

    __call__ = infer

    def info(self) -> dict[str, Any]:
        return {**self.runner.info(), "tta": self.spec.to_dict()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


def with_tta(runner: Any, mode: str | None) -> Any:
    """``runner`` with test-time augmentation ``mode`` (None: unchanged).

    Raises:
        ValueError: an unknown mode, or an artifact that already carries one (it would be applied twice).
    """
    if not mode:
        return runner
    carried = carried_tta(runner.manifest)
    if carried:
        raise ValueError(f"{runner.manifest.artifact} already averages {carried.get('mode')} views in its graph "
                         "(converted with --tta): drop --tta")
    layout = runner.manifest.input.layout
    spec = parse_tta(mode)
    if layout in ("ncdhw", "ndhwc") and spec.scales != (1.0,):
        raise ValueError("test-time scales are for 2D models; use flips only (--tta flips) for volumes")
    return TTARunner(runner, spec)


def is_volume_model(manifest: Any) -> bool:
    return manifest.input.layout in ("ncdhw", "ndhwc")


def nifti_name(path: Path) -> str | None:
    """The case name of a NIfTI file (``ct_01.nii.gz`` -> ``ct_01``), or None for other files."""
    low = path.name.lower()
    return next((path.name[: -len(s)] for s in NIFTI_SUFFIXES if low.endswith(s)), None)


def volume_inputs(path: Path) -> list[Path] | None:
    """The NIfTI volumes ``path`` names (a file, or a folder's ``.nii``/``.nii.gz`` files), or None when it
    names no volumes (then it is images or a video)."""
    if path.is_file():
        return [path] if nifti_name(path) else None
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and nifti_name(p) and not p.name.startswith("."))
        return found or None
    return None


def segment_volume(runner: Any, volume: np.ndarray, overlap: float = DEFAULT_OVERLAP,
                   threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(label map uint8 (D, H, W), logits (K, D, H, W)) of a raw (C, D, H, W) or (D, H, W) volume, normalised
    as the runner's manifest says and covered by windows of the artifact's input size."""
    from edgeseg.runtimes.processing import preprocess_volume, sigmoid

    m = runner.manifest
    x = preprocess_volume(volume, m.preprocessing)
    logits = sliding_window(runner.infer, x, window_of(m), overlap=overlap)[0]
    if logits.shape[0] == 1:
        thr = m.postprocessing.threshold if threshold is None else float(threshold)
        return (sigmoid(logits[0]) > thr).astype(np.uint8), logits
    return logits.argmax(0).astype(np.uint8), logits


def predict_volumes(runner: Any, files: list[Path], out: Path, threshold: float | None = None,
                    overlap: float = DEFAULT_OVERLAP) -> list[dict[str, Any]]:
    """Segment NIfTI volumes; write ``<name>_label.nii.gz`` (uint8 labels, the input's affine) per volume.

    Raises:
        ValueError: an unreadable volume, or one whose channels the manifest does not describe.
    """
    from edgeseg.common.deps import require
    from edgeseg.common.io import atomic_path
    from edgeseg.data.volumes import read_nifti

    nib = require("nibabel", "reading and writing NIfTI volumes")
    rows = []
    for f in files:
        volume, spacing = read_nifti(f)  # (C, D, H, W) or (D, H, W), NIfTI's axes reversed
        affine = nib.load(str(f)).affine
        t0 = time.perf_counter()
        labels, _ = segment_volume(runner, volume, overlap, threshold)
        seconds = time.perf_counter() - t0
        dest = out / f"{nifti_name(f)}_label.nii.gz"
        with atomic_path(dest, suffix=".nii.gz") as tmp:
            nib.save(nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), affine), str(tmp))
        rows.append({"input": str(f), "labels": str(dest), "shape": list(labels.shape),
                     "spacing": [round(float(s), 6) for s in spacing],
                     "foreground": round(float((labels > 0).mean()), 6), "infer_s": round(seconds, 3),
                     "window": list(window_of(runner.manifest)), "overlap": overlap})
    return rows


def runner_module(runner: Any):
    """``runner`` as a torch module (numpy in and out behind it), so the torch evaluation code scores an
    artifact exactly as it scores a checkpoint: same data, same resizing, same metrics."""
    import torch

    class _RunnerModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.runner = runner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.runner.infer(np.ascontiguousarray(x.detach().cpu().float().numpy()))
            return torch.from_numpy(np.ascontiguousarray(y))

    return _RunnerModule()
