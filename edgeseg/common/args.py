"""Command-line value checks shared by every command (the edgeseg CLI and the demo app alike)."""

from __future__ import annotations

import argparse
from typing import Any


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts and sizes: a whole number >= 1. Zero is refused, not read as "default".

    Examples:
        >>> parser.add_argument("--threads", type=positive_int)
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value} (leave the option out for the default)")
    return value


# ---- argument groups shared by the commands (in the manner of Polygraphy's argument groups) -------------------
# Each option is declared here once, with its check; a command says which options of a group it takes.

MODEL_HELP = {
    "model": "registered model name (see `edgeseg models`); without --weights its shipped weights",
    "weights": "edgeseg checkpoint (.pt) or a bare state_dict (with --model)",
    "artifact": "converted model (.onnx, .xml, .tflite, .pte) with its manifest beside it",
}


def positive_float(text: str) -> float:
    """An argparse ``type`` for durations and budgets: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _into(p: Any, title: str | None) -> Any:
    return p.add_argument_group(title) if title else p


def add_model_arguments(p: Any, *, options: tuple[str, ...] = ("model", "weights", "artifact"),
                        required: tuple[str, ...] = (), helps: dict[str, str] | None = None,
                        defaults: dict[str, str] | None = None, title: str | None = "model") -> Any:
    """``--model``, ``--weights``, ``--artifact`` (those in ``options``; ``required`` ones must be given;
    ``helps`` and ``defaults`` word or preset one for this command). ``title``: the help section (None:
    ``p`` itself, or a group)."""
    g = _into(p, title)
    for name in options:
        g.add_argument(f"--{name}", default=(defaults or {}).get(name), required=name in required,
                       help=(helps or {}).get(name, MODEL_HELP[name]))
    return g


def add_runtime_arguments(p: Any, *, options: tuple[str, ...] = ("runtime", "device", "threads"),
                          torch_device: bool = False, threads_default: str = "the backend's",
                          title: str | None = "runtime") -> Any:
    """``--runtime``, ``--device``, ``--threads`` (those in ``options``). ``torch_device``: the device is
    torch's (auto, cpu, cuda; default auto) rather than a backend's (see `edgeseg devices`; default cpu)."""
    g = _into(p, title)
    if "runtime" in options:
        g.add_argument("--runtime", default=None, help="backend (default: from the artifact's manifest)")
    if "device" in options and torch_device:
        g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="torch device (default auto: cuda when there is one)")
    elif "device" in options:
        g.add_argument("--device", default="cpu", help="device of the backend (see `edgeseg devices`; default cpu)")
    if "threads" in options:
        g.add_argument("--threads", type=positive_int, default=None, help=f"threads (default: {threads_default})")
    return g


def add_data_argument(p: Any, *, default: str | None = "synthetic", what: str = "dataset") -> None:
    """``--data``: a labelled image folder (images/ + masks/, or the CVC layouts), or synthetic[:N]."""
    shown = f"; default: {default}" if default else ""
    p.add_argument("--data", default=default, help=f"{what} folder (images/ + masks/, Kvasir-SEG, CVC layouts) or "
                                                   f"synthetic[:N]{shown}")


def add_artifact_arguments(p: Any, *, checkpoints: bool = False) -> None:
    """What running an artifact takes beyond the runtime: ``--threshold``, ``--no-hash-check`` and
    ``--preprocessing`` (for an artifact without a manifest; ``checkpoints``: the command also runs
    checkpoints, whose recorded pre-processing it replaces). The threshold's range is the command's to check."""
    p.add_argument("--threshold", type=float, default=None, help="mask probability threshold (default: the "
                                                                   "manifest's)")
    p.add_argument("--no-hash-check", action="store_true",
                   help="run an artifact whose files differ from its manifest's sha256 (edited on purpose)")
    p.add_argument("--preprocessing", metavar="JSON_OR_FILE",
                   help="pre-processing of an artifact without a manifest (refused otherwise), as a JSON object "
                        "or file: '{\"size\": [256, 256], \"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, "
                        "0.224, 0.225]}' (optional: resize stretch|letterbox, color rgb|gray); another artifact's "
                        "manifest works too" + (". With --weights/--model it replaces the checkpoint's"
                                                if checkpoints else ""))
