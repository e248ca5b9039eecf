"""Recipes of ``edgeseg run``: one YAML file from a dataset to verified, benchmarked device artifacts.

A recipe names the model and the data and has one section per stage. Every key is checked when the recipe
is read: an unknown key or a value of the wrong kind is one ``ValueError`` line naming the key and what is
allowed, before any work starts::

    name: synthetic                  # default: the file's stem
    description: one line
    model: ultralightunet-t          # a registered 2D model (`edgeseg models`)
    data: synthetic:64               # an image/mask folder or synthetic[:N]; `--data` overrides it
    train:                           # any option of edgeseg.train.TrainConfig (the `edgeseg train` options)
      epochs: 2
      img_size: 64
      val: synthetic:16
    convert:                         # float artifacts: the `convert` stage
      targets: [onnx, openvino, tflite]    # or all; a target whose backend is not installed is skipped
      precisions: [fp32]                   # fp32 and/or fp16 (int8 is the `quantize` stage)
    quantize:                        # int8 artifacts within the accuracy budget: the `quantize` stage
      targets: null                  # null: the convert targets; [] makes no int8
      max_dice_drop: 0.05            # the budget: int8 Dice (held-back labelled images) vs the FP32 model's
      calib_size: 32
    verify: {images: 8}              # parity of every artifact with the FP32 torch model (convert, quantize)
    bench:                           # any edgeseg.benchmarks.BenchConfig option but the ones the run sets
      iters: 20
    report:                          # the model card's data description
      data_name: synthetic polyp phantoms

Relative data paths are resolved against the current folder, then the recipe's folder (the repository root
for the recipes shipped in ``edgeseg/workflow/recipes``); ``$VARS`` and ``~`` are expanded.

Examples:
    >>> from edgeseg.workflow import load_recipe
    >>> recipe = load_recipe("synthetic", overrides={"train.epochs": 1})
    >>> recipe.train["img_size"], recipe.quantize.max_dice_drop
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.workflow.schema import coerce, fail, in_recipe_terms, pass_through, unknown_keys

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
# shipped recipes name data beside the repository (../shared/data/...), like the benchmark suites
_REPO_ROOT = Path(__file__).resolve().parents[2]

TOP_KEYS = ("name", "description", "model", "data", "train", "convert", "quantize", "verify", "bench", "report")
SECTIONS = ("train", "convert", "quantize", "verify", "bench", "report")
# TrainConfig fields the run sets itself: the model and data come from the top level, the folder is the run's
TRAIN_RESERVED = ("model", "data", "out", "resume")
# BenchConfig fields the run sets from the other stages (weights, artifacts, size and matrix)
BENCH_RESERVED = ("model", "weights", "targets", "precisions", "img_size", "out", "artifacts", "reuse",
                  "calibration", "convert_options", "suite")
FLOAT_PRECISIONS = ("fp32", "fp16")
OVER_BUDGET = ("report", "fail")


def _targets(where: str, value: Any, allow_empty: bool) -> tuple[str, ...]:
    from edgeseg.converters import list_targets

    valid = list(list_targets())
    if value == "all":
        return tuple(valid)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise fail(where, f"expected a list of targets ({', '.join(valid)}) or 'all', got {value!r}")
    out: list[str] = []
    for t in value:
        t = str(t).lower()
        if t not in valid:
            close = difflib.get_close_matches(t, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise fail(where, f"unknown target {t!r}{hint}; allowed: {', '.join(valid)} or all")
        if t not in out:
            out.append(t)
    return tuple(out)


@dataclass(frozen=True)
class ConvertSection:
    """The float artifacts (``convert`` stage).

    Args:
        targets: targets to convert to (a target whose backend is not installed is skipped, with its extra).
        precisions: float precisions, fp32 and/or fp16 (a precision a target does not make is skipped).
        exporter: ONNX exporter ("torchscript" or "dynamo").
        opset: ONNX opset.
        simplify: fold constants in the ONNX graph.
    """

    targets: tuple[str, ...] = ("onnx", "openvino", "tflite")
    precisions: tuple[str, ...] = ("fp32",)
    exporter: str = "torchscript"
    opset: int = 17
    simplify: bool = True


@dataclass(frozen=True)
class QuantizeSection:
    """The int8 artifacts within the accuracy budget (``quantize`` stage).

    Args:
        targets: targets to quantize (None: the convert targets; empty: no int8).
        max_dice_drop: the accuracy budget: the largest drop of int8 Dice below the FP32 model's on the
            held-back labelled verification images; targets with accuracy-controlled quantization (OpenVINO's
            NNCF) also quantize to it. None: no budget (figures reported only).
        calib_size: calibration images (from the data's train split).
        calib_method: ONNX activation-range estimator (None: the target's default).
        quantizer: TFLite int8 tool (None: the target's default).
        isa: int8 kernels to quantize for: auto, portable or vnni.
        over_budget: what an artifact over the budget does: "report" (kept, marked, never recommended) or
            "fail" (the run exits 1 after the report is written).
    """

    targets: tuple[str, ...] | None = None
    max_dice_drop: float | None = 0.05
    calib_size: int = 64
    calib_method: str | None = None
    quantizer: str | None = None
    isa: str = "auto"
    over_budget: str = "report"


@dataclass(frozen=True)
class VerifySection:
    """The parity check of every artifact against the FP32 torch model (part of convert and quantize).

    Args:
        images: held-back verification images (the data's val split).
        threads: runtime threads while verifying (None: the backend's default).
    """

    images: int = 16
    threads: int | None = None


@dataclass(frozen=True)
class ReportSection:
    """What the model card says about the data (the figures come from the stages).

    Args:
        data_name: how the card names the data (default: the data path).
        data_terms: the data's terms of use, copied into the card.
        notes: free text for the card.
    """

    data_name: str | None = None
    data_terms: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (see the module docstring for the file format).

    Attributes:
        name: the recipe's name (default run folder ``runs/<name>``).
        model: registered model name.
        data: dataset folder (resolved) or ``synthetic[:N]``.
        train: TrainConfig options (as written, types checked).
        convert: the convert stage.
        quantize: the quantize stage.
        verify: the parity check.
        bench: BenchConfig options (types checked); ``enabled: false`` skips the stage.
        report: the model card's data description.
        description: one line.
        path: the recipe file.
    """

    name: str
    model: str
    data: str
    train: dict[str, Any] = field(default_factory=dict)
    convert: ConvertSection = field(default_factory=ConvertSection)
    quantize: QuantizeSection = field(default_factory=QuantizeSection)
    verify: VerifySection = field(default_factory=VerifySection)
    bench: dict[str, Any] = field(default_factory=dict)
    report: ReportSection = field(default_factory=ReportSection)
    description: str = ""
    path: str | None = None

    @property
    def quantize_targets(self) -> tuple[str, ...]:
        return self.convert.targets if self.quantize.targets is None else self.quantize.targets

    @property
    def bench_enabled(self) -> bool:
        return bool(self.bench.get("enabled", True))

    def bench_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.bench.items() if k != "enabled"}

    def section(self, name: str) -> dict[str, Any]:
        """The section ``name`` as a plain dict, defaults filled in (what a stage's cache key hashes)."""
        value = getattr(self, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            d = dataclasses.asdict(value)
            if name == "quantize":
                d["targets"] = list(self.quantize_targets)
            return d
        return dict(value)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "model": self.model, "data": self.data,
                **{s: self.section(s) for s in SECTIONS}}


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``edgeseg/workflow/recipes``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def find_recipe(ref: str | Path) -> Path:
    """A recipe file from a path or a shipped recipe's name (``synthetic``, ``kvasir-seg``).

    Raises:
        FileNotFoundError: neither a file nor a shipped name (with the shipped names).
    """
    from edgeseg.common.io import find_shipped_yaml

    return find_shipped_yaml(ref, RECIPES_DIR, "recipe")


def recipe_description(ref: str | Path) -> str:
    """The ``description`` line of a recipe, read without validating it (its data may be elsewhere)."""
    import yaml

    try:
        raw = yaml.safe_load(find_recipe(ref).read_text())
    except yaml.YAMLError:
        return "(not valid YAML)"
    return str(raw.get("description") or "") if isinstance(raw, dict) else ""


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ValueError(f"override {dotted!r}: use SECTION.KEY=VALUE (e.g. train.epochs=2) or a top-level key")
    node = raw
    for k in keys[:-1]:
        if node.get(k) is None:
            node[k] = {}
        if not isinstance(node[k], dict):
            raise ValueError(f"override {dotted!r}: {k!r} is not a section")
        node = node[k]
    node[keys[-1]] = value


def _resolve_data(value: str, base: Path, where: str) -> str:
    if value == "synthetic" or value.startswith("synthetic:"):
        from edgeseg.data.sources import _synthetic_n

        _synthetic_n(value, 1)  # a bad N is refused here
        return value
    path = Path(os.path.expandvars(value)).expanduser()
    if not path.is_absolute() and not path.exists():
        path = base / path
    if not path.is_dir():
        raise FileNotFoundError(f"{where}: data folder {value!r} not found (looked in the current folder and "
                                f"{base}); pass --data PATH (a folder of images/ + masks/) or synthetic")
    return str(path.resolve())


def load_recipe(ref: str | Path, overrides: dict[str, Any] | None = None, data: str | None = None) -> Recipe:
    """Read, override and validate a recipe.

    Args:
        ref: a YAML path or a shipped recipe's name.
        overrides: ``{"train.epochs": 2, ...}`` applied over the file before it is checked.
        data: replaces the recipe's ``data``.

    Raises:
        FileNotFoundError: no such recipe or data folder.
        ValueError: bad YAML, an unknown key or a bad value (one line naming the key and what is allowed).
    """
    import yaml

    path = find_recipe(ref)
    where = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a recipe is a YAML mapping of keys ({', '.join(TOP_KEYS)})")
    for key, value in (overrides or {}).items():
        _set(raw, key, value)
    if data is not None:
        raw["data"] = data
    unknown_keys(where, raw, TOP_KEYS)
    for key in ("model", "data"):
        if not raw.get(key) or not isinstance(raw[key], str):
            raise fail(f"{where}: {key}", "required: a string (e.g. model: ultralightunet-t, data: synthetic)")
    for sec in SECTIONS:
        if raw.get(sec) is None:
            raw[sec] = {}
        if not isinstance(raw[sec], dict):
            raise fail(f"{where}: {sec}", f"a section is a mapping of keys, got {raw[sec]!r}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise fail(f"{where}: name", f"a plain name without folders, got {name!r}")

    from edgeseg.models import get_model_cfg

    try:
        mcfg = get_model_cfg(raw["model"])
    except ValueError as exc:
        raise fail(f"{where}: model", str(exc)) from None
    if mcfg.spatial_dims != 2:
        raise fail(f"{where}: model", f"{mcfg.name} is a {mcfg.spatial_dims}D model; edgeseg run takes 2D "
                    "models (3D: edgeseg train, then edgeseg convert)")
    base = _REPO_ROOT if path.parent.resolve() == RECIPES_DIR else path.parent.resolve()
    data_path = _resolve_data(raw["data"], base, f"{where}: data")

    train = _train_section(f"{where}: train", raw["train"], mcfg, base)
    convert = _section(f"{where}: convert", raw["convert"], ConvertSection)
    convert = dataclasses.replace(convert, targets=_targets(f"{where}: convert.targets", convert.targets, False))
    bad = [p for p in convert.precisions if p not in FLOAT_PRECISIONS]
    if bad or not convert.precisions:
        extra = " (int8 is made by the quantize stage: quantize.targets)" if "int8" in bad else ""
        raise fail(f"{where}: convert.precisions", f"got {list(convert.precisions)}{extra}; allowed: "
                    f"{', '.join(FLOAT_PRECISIONS)}")
    quantize = _section(f"{where}: quantize", raw["quantize"], QuantizeSection)
    if quantize.targets is not None:
        quantize = dataclasses.replace(quantize, targets=_targets(f"{where}: quantize.targets", quantize.targets, True))
    if quantize.over_budget not in OVER_BUDGET:
        raise fail(f"{where}: quantize.over_budget", f"got {quantize.over_budget!r}; allowed: {', '.join(OVER_BUDGET)}")
    verify = _section(f"{where}: verify", raw["verify"], VerifySection)
    from edgeseg.converters import ExportOptions, QuantOptions, VerifyOptions

    checks = {  # the converters' own checks, before any work
        "convert": lambda: ExportOptions(exporter=convert.exporter, opset=convert.opset),
        "quantize": lambda: QuantOptions(calib_size=quantize.calib_size, isa=quantize.isa,
                                         max_dice_drop=quantize.max_dice_drop),
        "verify": lambda: VerifyOptions(images=verify.images, threads=verify.threads),
    }
    for sec, check in checks.items():
        try:
            check()
        except ValueError as exc:
            raise fail(f"{where}: {sec}", str(exc)) from None
    from edgeseg.benchmarks.harness import BenchConfig

    bench = pass_through(f"{where}: bench", raw["bench"], BenchConfig, BENCH_RESERVED, {"enabled": bool})
    if "data" in bench:
        bench["data"] = _resolve_data(bench["data"], base, f"{where}: bench.data")
    try:
        BenchConfig(model=mcfg.name, **{k: v for k, v in bench.items() if k != "enabled"}).validate()
    except ValueError as exc:
        raise in_recipe_terms(f"{where}: bench", exc, [f.name for f in dataclasses.fields(BenchConfig)]) from None
    report = _section(f"{where}: report", raw["report"], ReportSection)
    desc = raw.get("description") or ""
    return Recipe(name=name, model=mcfg.name, data=data_path, train=train, convert=convert, quantize=quantize,
                  verify=verify, bench=bench, report=report, description=str(desc), path=str(path.resolve()))


def _section(where: str, raw: dict[str, Any], cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown_keys(where, raw, names)
    values = {}
    for key, value in raw.items():
        if key == "targets" and value is not None and not isinstance(value, (list, tuple)):
            values[key] = value  # "all" / "onnx,tflite": expanded by _targets
            continue
        values[key] = coerce(value, hints[key], f"{where}.{key}")
    return cls(**values)


def _train_section(where: str, raw: dict[str, Any], mcfg: Any, base: Path) -> dict[str, Any]:
    from edgeseg.train.loop import TrainConfig

    train = pass_through(where, raw, TrainConfig, TRAIN_RESERVED)
    if "val" in train and train["val"] is not None and not str(train["val"]).startswith("synthetic"):
        train["val"] = _resolve_data(train["val"], base, f"{where}.val")
    if train.get("init"):
        init = Path(os.path.expandvars(train["init"])).expanduser()
        if not init.is_absolute() and not init.exists():
            init = base / init
        if not init.is_file():
            raise FileNotFoundError(f"{where}.init: checkpoint {train['init']!r} not found (looked in the current "
                                    f"folder and {base})")
        train["init"] = str(init.resolve())
    cfg = TrainConfig(model=mcfg.name, **{"img_size": int(mcfg.input_size[-1]), **train})
    try:
        cfg.check()
    except ValueError as exc:
        raise in_recipe_terms(where, exc, [f.name for f in dataclasses.fields(TrainConfig)]) from None
    if cfg.img_size % mcfg.divisible_by:
        raise fail(f"{where}.img_size", f"must be a multiple of {mcfg.divisible_by} for {mcfg.name}, "
                    f"got {cfg.img_size}")
    return train
