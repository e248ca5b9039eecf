"""Benchmark suites: a YAML file that captures a model, its data and the matrix (``benchmarks/suites/*.yaml``).

Keys (all optional except ``model``; command-line options override them)::

    name: kvasir-polyp
    description: one line
    model: ultralightunet-s
    weights: null                # a checkpoint; null: the shipped weights, else a seeded random init
    data: ../shared/data/kvasir-seg-256    # a folder or synthetic / synthetic:N
    split: val
    img_size: 256
    targets: [onnx, openvino, tflite]      # or "all"
    precisions: [fp32, fp16, int8]
    devices: [cpu]
    runtimes: null               # null: each target's own runtime; a list adds/restricts backends
    threads: 2
    warmup: 10
    iters: 50                    # or min_time: 5.0
    limit: null                  # first N cases only
    calibration: 32              # int8 calibration images from the training split
    fidelity: {min_agreement: {int8: 0.95}, max_abs_diff: {fp32: 0.01}}
    runtime_options: {openvino: {hint: LATENCY}}
    convert_options: {onnx: {...}}
    gates: {fail_on_regression: 25, min_agreement: 0.95, max_dice_drop: 0.02}

Relative data/weights paths are resolved against the current folder first, then against the repository
root (the folder that holds ``benchmarks/``); ``$VARS`` are expanded. Torch-free.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

SUITES_DIR = Path(__file__).resolve().parent / "suites"
REPO_ROOT = Path(__file__).resolve().parents[1]
KEYS = ("name", "description", "model", "weights", "data", "split", "img_size", "targets", "precisions",
        "devices", "runtimes", "threads", "warmup", "iters", "min_time", "limit", "calibration", "fidelity",
        "runtime_options", "convert_options", "gates", "video")
GATE_KEYS = ("fail_on_regression", "min_agreement", "max_dice_drop")


def list_suites() -> list[str]:
    """Names of the suites shipped in ``benchmarks/suites``."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def find_suite(ref: str | Path) -> Path:
    """A suite file from a path or a shipped suite's name (``kvasir-polyp``)."""
    from edgeseg.common.io import find_shipped_yaml

    return find_shipped_yaml(ref, SUITES_DIR, "suite", show_folder=True)


def _resolve_path(value: str | None) -> str | None:
    if value is None or str(value).startswith("synthetic"):
        return value
    value = os.path.expandvars(str(value))
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return str(path)
    alt = REPO_ROOT / path
    return str(alt) if alt.exists() else str(path)


def load_suite(ref: str | Path) -> dict[str, Any]:
    """Read and validate a suite; returns its keys with paths resolved.

    Raises:
        FileNotFoundError: no such suite.
        ValueError: not YAML, not a mapping, unknown keys (with suggestions) or no model.
    """
    import yaml

    path = find_suite(ref)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a suite is a YAML mapping of keys ({', '.join(KEYS)})")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, KEYS, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{path}: unknown key(s) {', '.join(hints)}; valid: {', '.join(KEYS)}")
    if not data.get("model"):
        raise ValueError(f"{path}: a suite must name its model (model: ultralightunet-s)")
    gates = data.get("gates") or {}
    bad = sorted(set(gates) - set(GATE_KEYS))
    if bad:
        raise ValueError(f"{path}: unknown gate(s) {bad}; valid: {', '.join(GATE_KEYS)}")
    fid = data.get("fidelity") or {}
    bad = sorted(set(fid) - {"min_agreement", "max_abs_diff"})
    if bad:
        raise ValueError(f"{path}: unknown fidelity key(s) {bad}; valid: min_agreement, max_abs_diff")
    for key in ("targets", "precisions", "devices", "runtimes"):
        if isinstance(data.get(key), list):
            data[key] = ",".join(str(v) for v in data[key])
    data["data"] = _resolve_path(data.get("data"))
    data["weights"] = _resolve_path(data.get("weights"))
    data.setdefault("name", path.stem)
    data["path"] = str(path)
    return data
