"""The training run's settings (:class:`TrainConfig`) and the one declaration of a training option (torch-free).

A *declared* option is a :class:`TrainConfig` field built with :func:`option`: its help text, CLI flag and
whether the model card quotes it live in the field, and everything else is derived from it:

- the CLI: :func:`add_declared_arguments` adds ``--<name>`` to ``edgeseg train`` and
  :func:`declared_values` reads it back into the config;
- the checkpoint: the recipe is ``asdict(cfg)``, so every field is recorded;
- the model card: :func:`card_keys` lists the recipe keys that :mod:`edgeseg.train.ship` copies.

Adding an option is one ``option(...)`` field, plus its check in :meth:`TrainConfig.check` and its use in the
loop. The older fields are plain dataclass fields with hand-written flags in ``edgeseg/cli/train.py``; they
can move to :func:`option` one at a time.

This module imports no torch, so ``edgeseg train --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

AMP_MODES = ("auto", "on", "off")


def option(default: Any, help: str, *, flag: str | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, choices: tuple[str, ...] | None = None,
           card: bool = True) -> Any:
    """A :class:`TrainConfig` field that is also a CLI flag and (``card``) a model-card recipe entry.

    Args:
        default: the default value (of the Python API and the CLI alike).
        help: one line for ``--help`` (the option's documentation).
        flag: the CLI flag (default ``--`` + the field name with dashes).
        metavar: the value's name in ``--help``.
        parse: turns the CLI string into the value (default: the default's type, ``str`` for None).
        choices: the values the CLI accepts.
        card: the model card quotes it under ``recipe``.
    """
    meta = {"help": help, "flag": flag, "metavar": metavar, "parse": parse, "choices": choices, "card": card}
    return field(default=default, metadata={"option": meta})


def _declared() -> list[Any]:
    return [f for f in fields(TrainConfig) if "option" in f.metadata]


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the checkpoint as its recipe).

    Fields built with :func:`option` (``skip_attention``, ``clip``, ``amp``) are documented by their help
    text, which is also their ``edgeseg train --help`` line.

    Attributes:
        model: registry name.
        data: dataset folder or "synthetic[:N]".
        val: validation folder or "synthetic[:N]" (default: the data's val split or a 10% hold-out).
        epochs: training epochs.
        img_size: square training size (a multiple of 32).
        batch_size: images per step and process.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        out: run folder (best.pt, last.pt, history.json).
        resume: continue from ``out/last.pt``.
        device: "cpu", "cuda" or "auto".
        workers: threads decoding the dataset; >= 1 also prepares batches in a background thread.
        threads: torch intra-op threads (None keeps torch's default).
        seed: seed of every random choice.
        num_classes: output channels (1 = binary).
        mask_mode: "binary" or "labels".
        loss: loss name (default by task).
        multiscale: train at {0.75, 1, 1.25} x img_size.
        augment: flips and rotations.
        zoom: with ``augment``: random zoom in [1 - zoom, 1 + zoom] per sample (0 = off).
        color_jitter: with ``augment``: brightness/contrast/saturation factors in [1 - c, 1 + c] (0 = off).
        channels_last: channels_last memory format (faster convolutions on CPU).
        compile: ``torch.compile`` the model for training.
        init: a checkpoint to start from (fine-tuning), or None for random initialisation.
        ema: decay of an exponential moving average of the weights, which is then what gets validated and
            saved (0 = off; 0.998 averages over roughly the last 500 steps).
        synthetic_train: synthetic training samples when data is "synthetic".
        progress: show a progress bar.
        max_steps_per_epoch: cap on steps per epoch (for quick checks; None = full epochs).
        patches_per_case: 3D only: random patches drawn from each training volume per epoch.
        fg_ratio: 3D only: share of those patches centred on a foreground voxel.
        intensity_clip: 3D only: fixed intensity window (e.g. (-100, 240) for CT); default: percentiles.
        sw_overlap: 3D only: overlap of the sliding windows that validate whole volumes.
    """

    model: str
    data: str = "synthetic"
    val: str | None = None
    epochs: int = 50
    img_size: int = 256
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip: float = option(0.5, "clip the gradient norm at this value before each step (0 = no clipping; "
                              "default 0.5)", metavar="NORM", parse=_non_negative_float)
    out: str = "runs/model"
    resume: bool = False
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    seed: int = 0
    num_classes: int = 1
    mask_mode: str = "binary"
    loss: str | None = None
    multiscale: bool = True
    augment: bool = True
    zoom: float = 0.0
    color_jitter: float = 0.0
    channels_last: bool = True
    compile: bool = False
    amp: bool | str = option("auto", "mixed precision: on (fp16 + loss scaling on CUDA, bf16 on a CPU with "
                                     "native bf16), off (fp32), auto (default: on with CUDA, off on CPU)",
                             choices=AMP_MODES)
    init: str | None = None
    ema: float = 0.0
    synthetic_train: int = 400
    progress: bool = True
    max_steps_per_epoch: int | None = None
    patches_per_case: int = 4
    fg_ratio: float = 0.5
    intensity_clip: tuple[float, float] | None = None
    sw_overlap: float = 0.25
    skip_attention: str | None = option(None, "the block on the skip connections (default: the model's), e.g. "
                                              "gag (UltraLightUNet's), ag (Attention U-Net's), se, cbam, none; "
                                              "a wrong name lists them all", metavar="NAME")

    @property
    def amp_mode(self) -> str:
        """``amp`` as "auto", "on" or "off"; ``True``/``False`` mean "on"/"off" (as YAML reads ``amp: on``)."""
        if isinstance(self.amp, bool):
            return "on" if self.amp else "off"
        return str(self.amp).lower()

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, saying what to use instead."""
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.img_size < 16:
            raise ValueError(f"--img-size must be at least 16 (and a multiple of the model's stride), "
                             f"got {self.img_size}")
        if self.patches_per_case < 1:
            raise ValueError(f"--patches-per-case must be >= 1, got {self.patches_per_case}")
        if not 0.0 <= self.fg_ratio <= 1.0:
            raise ValueError(f"--fg-ratio must be in [0, 1], got {self.fg_ratio}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1) (e.g. 0.998; 0 = off), got {self.ema}")
        if not (0.0 <= self.zoom < 1.0 and 0.0 <= self.color_jitter < 1.0):
            raise ValueError(f"--zoom and --color-jitter must be in [0, 1) (e.g. 0.2), got {self.zoom} and "
                             f"{self.color_jitter}")
        if (self.zoom or self.color_jitter) and not self.augment:
            raise ValueError("--zoom and --color-jitter are augmentations: drop --no-augment to use them")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not self.clip >= 0:
            raise ValueError(f"--clip must be >= 0 (0 = no clipping; e.g. 0.5), got {self.clip}")
        if self.amp_mode not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        if self.skip_attention is not None:
            check_skip_attention(self.model, self.skip_attention)


def check_skip_attention(model: str, kind: str) -> None:
    """Refuse a skip attention that ``model`` cannot take or that does not exist (with the valid choices).

    Raises:
        ValueError: the model has no ``skip_attention`` option, or ``kind`` is not a known block.
    """
    import difflib

    from edgeseg.layers.gates import SKIP_ATTENTION_CHOICES
    from edgeseg.models import get_model_cfg, list_models

    if "skip_attention" not in get_model_cfg(model).options:
        able = [n for n in list_models() if "skip_attention" in get_model_cfg(n).options]
        raise ValueError(f"{model} has no skip-attention option; drop --skip-attention, or train one of: "
                         f"{', '.join(able)}")
    if kind not in SKIP_ATTENTION_CHOICES:
        close = difflib.get_close_matches(kind, SKIP_ATTENTION_CHOICES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown --skip-attention {kind!r}{hint}; choose one of {', '.join(SKIP_ATTENTION_CHOICES)}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX, Arm BF16): where it does not, bf16
    autocast is emulated and slower than fp32. Read from ``/proc/cpuinfo``; False where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def add_declared_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add a flag for every declared :class:`TrainConfig` option (see :func:`option`)."""
    for f in _declared():
        meta = f.metadata["option"]
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        parse = meta["parse"] or (type(f.default) if f.default not in (None, MISSING) else str)
        kw: dict[str, Any] = {"dest": f.name, "default": f.default, "help": meta["help"]}
        if meta["choices"]:
            kw["choices"] = list(meta["choices"])
        else:
            kw["type"] = parse
            if meta["metavar"]:
                kw["metavar"] = meta["metavar"]
        p.add_argument(flag, **kw)


def declared_values(args: argparse.Namespace) -> dict[str, Any]:
    """The declared options' values from parsed ``edgeseg train`` arguments, as TrainConfig keywords."""
    return {f.name: getattr(args, f.name) for f in _declared() if hasattr(args, f.name)}


def card_keys() -> tuple[str, ...]:
    """The declared options a model card quotes from the checkpoint's recipe."""
    return tuple(f.name for f in _declared() if f.metadata["option"]["card"])
