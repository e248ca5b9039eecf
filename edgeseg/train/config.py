"""The training run's settings (:class:`TrainConfig`, :class:`VolumeOptions`) and the one declaration of a
training option (torch-free).

Every setting is a field built with :func:`option`. Its default, help text, CLI flag and whether the model
card quotes it live in that one declaration, and everything else is derived from it:

- the Python API: the field itself (``TrainConfig(model=..., lr=...)``; the help text is its documentation);
- the CLI: :func:`add_declared_arguments` adds ``--<name>`` to ``edgeseg train`` (booleans get ``--x`` and
  ``--no-x``), and :func:`config_from_args` reads the parsed flags back into a :class:`TrainConfig`;
- ``edgeseg run`` recipes: their ``train`` section accepts every field, read from the class;
- the checkpoint: the recipe is :meth:`TrainConfig.record`, so every option is recorded;
- the model card: :func:`card_keys` lists the recipe keys that :mod:`edgeseg.train.ship` copies.

Adding an option is one ``option(...)`` field, plus its check in ``check()`` if a value can be wrong, and its
use in the engine (:mod:`edgeseg.train.engine`) or a data front end. Options only 3D training reads live in
the :class:`VolumeOptions` sub-config (``TrainConfig.volume``; the ``3D models`` group of ``--help``).

This module imports no torch, so ``edgeseg train --help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeseg.common.args import positive_int

AMP_MODES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda")
LOSSES = ("bce-iou", "wbce-wiou", "ce-dice", "dice-ce")
MASK_MODES = ("binary", "labels")
ADAMW_KERNELS = ("foreach", "loop", "fused")
# recipe keys that say what a run really did with its options (written by the engine, not declared): the card
# quotes them beside the declared options
RUN_RECORD_KEYS = ("optimizer", "schedule", "scales", "world_size", "attention_regularizer", "amp_dtype")


def option(default: Any, help: str, *, flag: str | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, choices: tuple[str, ...] | None = None,
           card: bool = False) -> Any:
    """A :class:`TrainConfig` (or :class:`VolumeOptions`) field that is also a CLI flag and, with ``card``, a
    model-card recipe entry.

    Args:
        default: the default value, of the Python API and the CLI alike (``MISSING``: a required option).
        help: one line for ``--help``; it is also the option's documentation.
        flag: the CLI flag (default ``--`` + the field name with dashes). Booleans also get ``--no-<flag>``.
        metavar: the value's name in ``--help``.
        parse: turns the CLI string into the value (default: by the field's type, ``int | None`` as int).
        choices: the values the CLI accepts.
        card: the model card quotes it under ``recipe``.
    """
    meta = {"help": help, "flag": flag, "metavar": metavar, "parse": parse, "choices": choices, "card": card}
    if default is MISSING:
        return field(metadata={"option": meta})
    return field(default=default, metadata={"option": meta})


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def parse_window(value: str | tuple[float, float] | list[float] | None) -> tuple[float, float] | None:
    """An intensity window from ``"LO,HI"`` (the CLI's text) or a pair; None stays None.

    Raises:
        ValueError: not two numbers, or LO not below HI.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else ",".join(str(v) for v in value)
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--intensity-clip wants LO,HI (e.g. -100,240), got {text!r}") from None
    if not lo < hi:
        raise ValueError(f"--intensity-clip: LO must be below HI, got {text!r}")
    return lo, hi


@dataclass
class VolumeOptions:
    """What only 3D (volume) training reads: how patches are drawn and how whole volumes are validated.

    Each field's help text (below, and in ``edgeseg train --help`` under "3D models") is its documentation.
    """

    patches_per_case: int = option(4, "random patches drawn from each training volume per epoch")
    fg_ratio: float = option(0.5, "share of those patches centred on a foreground voxel")
    intensity_clip: tuple[float, float] | None = option(
        None, "fixed intensity window, e.g. --intensity-clip=-100,240 for abdominal CT (default: 0.5-99.5 "
              "percentiles)", metavar="LO,HI")
    sw_overlap: float = option(0.25, "overlap of the sliding windows that validate whole volumes")

    def __post_init__(self) -> None:
        self.intensity_clip = parse_window(self.intensity_clip)

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, saying what to use instead."""
        if self.patches_per_case < 1:
            raise ValueError(f"--patches-per-case must be >= 1, got {self.patches_per_case}")
        if not 0.0 <= self.fg_ratio <= 1.0:
            raise ValueError(f"--fg-ratio must be in [0, 1], got {self.fg_ratio}")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError(f"--sw-overlap must be in [0, 1) (e.g. 0.25), got {self.sw_overlap}")


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the checkpoint as its recipe).

    Each field's help text is its documentation and its ``edgeseg train --help`` line; ``volume`` holds the
    options only 3D models read (:class:`VolumeOptions`; a mapping of them is accepted too, as recipes give).

    Examples:
        >>> cfg = TrainConfig("ultralightunet-t", data="synthetic", epochs=3, img_size=96, out="runs/t")
        >>> TrainConfig("ultralightunet3d-t", volume=VolumeOptions(intensity_clip=(-100, 240)))
    """

    model: str = option(MISSING, "registry name (see `edgeseg models`)")
    data: str = option("synthetic", "dataset folder (images/ + masks/, Original/ + 'Ground Truth'/, <n> + p<n>, "
                                    "<stem>_mask.png, train.txt/val.txt; 3D: an MSD folder or imagesTr/ + "
                                    "labelsTr/) or synthetic[:N]")
    val: str | None = option(None, "validation folder or synthetic[:N] (default: the data's val split, else a "
                                   "fixed 10% hold-out)")
    epochs: int = option(50, "training epochs", card=True)
    img_size: int | None = option(None, "square training size, a multiple of the model's stride; for 3D models "
                                        "the cubic patch side (default: the model's input size)",
                                  parse=positive_int, card=True)
    batch_size: int = option(8, "images (3D: patches) per step and process", card=True)
    lr: float = option(2e-3, "peak AdamW learning rate", card=True)
    weight_decay: float = option(1e-4, "AdamW weight decay", card=True)
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs (may be fractional)", flag="--warmup",
                                  card=True)
    min_lr_ratio: float = option(0.01, "the cosine schedule ends at lr x this ratio", card=True)
    clip: float = option(0.5, "clip the gradient norm at this value before each step (0 = no clipping; "
                              "default 0.5)", metavar="NORM", parse=_non_negative_float, card=True)
    out: str | None = option(None, "run folder: best.pt, last.pt, history.json|csv (default: runs/MODEL)")
    resume: bool = option(False, "continue the run in --out from its last.pt")
    device: str = option("auto", "where to train (auto: CUDA when visible)", choices=DEVICES)
    workers: int = option(1, "threads decoding the dataset; >= 1 also prepares batches in a background thread "
                             "(0: inline)")
    threads: int | None = option(None, "torch CPU threads (default: torch's)", parse=positive_int, card=True)
    seed: int = option(0, "seed of every random choice", card=True)
    num_classes: int = option(1, "output channels: 1 = binary; K > 1 needs integer label masks")
    mask_mode: str | None = option(None, "how masks are read: binary (> 127) or labels (integer classes); "
                                         "default: binary for 1 class, labels for more", choices=MASK_MODES)
    loss: str | None = option(None, "default by task: bce-iou (binary), ce-dice (multi-class), dice-ce (3D); "
                                    "wbce-wiou is the boundary-weighted binary loss of the UltraLightUNet paper",
                              choices=LOSSES, card=True)
    multiscale: bool = option(True, "train at {0.75, 1, 1.25} x the size (--no-multiscale: at --img-size only)",
                              card=True)
    augment: bool = option(True, "flips and rotations (3D: flips) (--no-augment: none)", card=True)
    zoom: float = option(0.0, "with augmentation: random zoom in [1-Z, 1+Z] per image (e.g. 0.2; 0 = off)",
                         metavar="Z", card=True)
    color_jitter: float = option(0.0, "with augmentation: random brightness/contrast/saturation factors in "
                                      "[1-C, 1+C] (e.g. 0.2; 0 = off)", metavar="C", card=True)
    channels_last: bool = option(True, "channels_last memory format (faster convolutions on CPU)", card=True)
    adamw: str = option("foreach", "AdamW's kernels: foreach (default: all parameters per op, bit-identical to "
                                   "loop), loop (one parameter at a time; the default before session 7), fused "
                                   "(one kernel; rounds differently, about 1e-7)", choices=ADAMW_KERNELS)
    compile: bool = option(False, "torch.compile the model (minutes for the first step; falls back to eager "
                                  "if compilation fails)")
    amp: bool | str = option("auto", "mixed precision: on (fp16 + loss scaling on CUDA, bf16 on a CPU with "
                                     "native bf16), off (fp32), auto (default: on with CUDA, off on CPU)",
                             choices=AMP_MODES, card=True)
    init: str | None = option(None, "start from this checkpoint (fine-tuning)")
    ema: float = option(0.0, "validate and save a moving average of the weights with this decay (e.g. 0.998; "
                             "default 0 = off)", metavar="DECAY", card=True)
    synthetic_train: int = option(400, "training samples of --data synthetic (synthetic:N sets N)",
                                  parse=positive_int)
    progress: bool = option(True, "show a per-step progress bar on a terminal")
    max_steps_per_epoch: int | None = option(None, "cap on steps per epoch (quick checks)", flag="--max-steps")
    skip_attention: str | None = option(None, "the block on the skip connections (default: the model's), e.g. "
                                              "gag (UltraLightUNet's), ag (Attention U-Net's), se, cbam, none; "
                                              "a wrong name lists them all", metavar="NAME", card=True)
    volume: VolumeOptions = field(default_factory=VolumeOptions, metadata={"group": "3D models"})

    def __post_init__(self) -> None:
        if isinstance(self.volume, Mapping):
            self.volume = _options_from(VolumeOptions, self.volume, "volume")
        if self.out is None:
            self.out = f"runs/{self.model}"
        if self.mask_mode is None:
            self.mask_mode = "binary" if self.num_classes == 1 else "labels"
        if self.img_size is None:
            from edgeseg.models import get_model_cfg

            self.img_size = int(get_model_cfg(self.model).input_size[-1])

    @property
    def amp_mode(self) -> str:
        """``amp`` as "auto", "on" or "off"; ``True``/``False`` mean "on"/"off" (as YAML reads ``amp: on``)."""
        if isinstance(self.amp, bool):
            return "on" if self.amp else "off"
        return str(self.amp).lower()

    def record(self) -> dict[str, Any]:
        """The options as the checkpoint's recipe records them: one flat mapping (the volume options beside
        the others), without ``resume``."""
        rec = asdict(self)
        rec.update(rec.pop("volume"))
        rec.pop("resume", None)
        return rec

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, saying what to use instead."""
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.img_size < 16:
            raise ValueError(f"--img-size must be at least 16 (and a multiple of the model's stride), "
                             f"got {self.img_size}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0 (0 = prepare batches inline), got {self.workers}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1) (e.g. 0.998; 0 = off), got {self.ema}")
        if not (0.0 <= self.zoom < 1.0 and 0.0 <= self.color_jitter < 1.0):
            raise ValueError(f"--zoom and --color-jitter must be in [0, 1) (e.g. 0.2), got {self.zoom} and "
                             f"{self.color_jitter}")
        if (self.zoom or self.color_jitter) and not self.augment:
            raise ValueError("--zoom and --color-jitter are augmentations: drop --no-augment to use them")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"--min-lr-ratio must be in [0, 1] (e.g. 0.01), got {self.min_lr_ratio}")
        if not self.clip >= 0:
            raise ValueError(f"--clip must be >= 0 (0 = no clipping; e.g. 0.5), got {self.clip}")
        for name, value, allowed in (("amp", self.amp_mode, AMP_MODES), ("device", self.device, DEVICES),
                                     ("mask-mode", self.mask_mode, MASK_MODES), ("adamw", self.adamw, ADAMW_KERNELS)):
            if value not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
        self.volume.check()
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        if self.skip_attention is not None:
            check_skip_attention(self.model, self.skip_attention)


def _options_from(cls: type, values: Mapping[str, Any], where: str) -> Any:
    names = [f.name for f in fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {where} option {key!r}{hint}; allowed: {', '.join(names)}")
    return cls(**values)


def check_skip_attention(model: str, kind: str) -> None:
    """Refuse a skip attention that ``model`` cannot take or that does not exist (with the valid choices).

    Raises:
        ValueError: the model has no ``skip_attention`` option, or ``kind`` is not a known block.
    """
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


# ------------------------------------------------------------------------ what follows from the declarations


def declared_options() -> Iterator[tuple[Field, str | None]]:
    """Every declared option, with the name of the sub-config that holds it (None: TrainConfig itself)."""
    for f in fields(TrainConfig):
        if "option" in f.metadata:
            yield f, None
        elif "group" in f.metadata:
            for sub in fields(f.default_factory):  # type: ignore[misc]
                yield sub, f.name


def flag_of(f: Field) -> str:
    """The ``edgeseg train`` flag of a declared option."""
    return f.metadata["option"]["flag"] or "--" + f.name.replace("_", "-")


def add_declared_arguments(p: argparse.ArgumentParser) -> None:
    """Add a flag for every declared option (see :func:`option`); sub-configs get their own group."""
    groups: dict[str | None, Any] = {None: p}
    hints: dict[str | None, dict[str, Any]] = {None: typing.get_type_hints(TrainConfig)}
    for f in fields(TrainConfig):
        if "group" in f.metadata:
            groups[f.name] = p.add_argument_group(f.metadata["group"])
            hints[f.name] = typing.get_type_hints(f.default_factory)
    for f, owner in declared_options():
        meta = f.metadata["option"]
        required = f.default is MISSING
        kw: dict[str, Any] = {"dest": f.name, "help": meta["help"].replace("%", "%%")}
        if required:
            kw["required"] = True
        else:
            kw["default"] = f.default
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif meta["choices"]:
            kw["choices"] = list(meta["choices"])
        else:
            kw["type"] = meta["parse"] or _text_to(hints[owner][f.name])
            kw["metavar"] = meta["metavar"] or flag_of(f).lstrip("-").replace("-", "_").upper()
        groups[owner].add_argument(flag_of(f), **kw)


def _text_to(hint: Any) -> Callable[[str], Any]:
    """How the CLI reads a value of the field type ``hint``: ``int``, ``float`` or ``str`` (``X | None`` reads
    as ``X``); other types take the text, and the config converts it (e.g. ``"LO,HI"`` windows)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) else [hint]
    return args[0] if len(args) == 1 and args[0] in (int, float, str) else str


def declared_values(args: argparse.Namespace) -> dict[str, Any]:
    """The declared options' values from parsed ``edgeseg train`` arguments, as TrainConfig keywords (the
    sub-config options as their sub-config, e.g. ``volume=VolumeOptions(...)``)."""
    top: dict[str, Any] = {}
    subs: dict[str, dict[str, Any]] = {}
    for f, owner in declared_options():
        if hasattr(args, f.name):
            (top if owner is None else subs.setdefault(owner, {}))[f.name] = getattr(args, f.name)
    types = {f.name: f.default_factory for f in fields(TrainConfig) if "group" in f.metadata}
    return {**top, **{name: types[name](**values) for name, values in subs.items()}}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` that parsed ``edgeseg train`` arguments describe.

    Raises:
        ValueError: a value the config refuses (e.g. a malformed ``--intensity-clip``), saying what to use.
    """
    return TrainConfig(**declared_values(args))


def card_keys() -> tuple[str, ...]:
    """The declared options a model card quotes from the checkpoint's recipe."""
    return tuple(f.name for f, _ in declared_options() if f.metadata["option"]["card"])
