"""What every stage of ``edgeseg run`` shares: the stage list, the context a stage sees, and the outside inputs
of each stage's cache key (:mod:`edgeseg.workflow.stages` runs them)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.workflow.cache import RunFolder, data_fingerprint
from edgeseg.workflow.recipe import Recipe

Outputs = tuple[dict[str, Any], list[Path]]


@dataclass(frozen=True)
class Stage:
    """One stage: the recipe sections and earlier stages its key covers, and the version of its code.

    ``version`` is part of the key: raise it when the stage's outputs change meaning.
    """

    name: str
    sections: tuple[str, ...]
    needs: tuple[str, ...] = ()
    version: int = 1


STAGES: tuple[Stage, ...] = (
    Stage("train", ("train",)),
    Stage("convert", ("convert", "verify"), needs=("train",)),
    Stage("quantize", ("quantize", "verify"), needs=("train",)),
    Stage("bench", ("bench",), needs=("train", "convert", "quantize")),
    Stage("report", ("report",), needs=("train", "convert", "quantize", "bench")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


@dataclass
class Context:
    """What a stage sees: the recipe, the run folder, the records of the stages before it."""

    recipe: Recipe
    folder: RunFolder
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)
    resume: bool = False  # the stage was interrupted with this same key (training resumes from last.pt)
    previous: dict[str, Any] | None = None  # the stage's last record when it had this same key (retries)
    _data_fp: dict[str, Any] | None = None

    @property
    def data_fingerprint(self) -> dict[str, Any]:
        if self._data_fp is None:
            self._data_fp = data_fingerprint(self.recipe.data)
        return self._data_fp

    def outputs(self, stage: str) -> dict[str, Any]:
        return self.records[stage]["outputs"]

    @property
    def checkpoint(self) -> Path:
        return self.folder.abs(self.outputs("train")["checkpoint"])

    @property
    def checkpoint_sha(self) -> str:
        return self.records["train"]["files"][self.outputs("train")["checkpoint"]]

    @property
    def img_size(self) -> int:
        return int(self.outputs("train")["img_size"])

    @property
    def artifacts_root(self) -> Path:
        return self.folder.root / "artifacts"


def stage_inputs(stage: Stage, ctx: Context) -> dict[str, Any]:
    """The outside inputs of a stage's key (besides its sections and upstream outputs)."""
    r = ctx.recipe
    if stage.name == "train":
        inputs: dict[str, Any] = {"model": r.model, "data": ctx.data_fingerprint["sha256"]}
        for key in ("init", "val"):
            value = r.train.get(key)
            if value and Path(value).is_file():
                from edgeseg.common.io import sha256_file

                inputs[key] = sha256_file(value)
            elif value and Path(value).is_dir():
                inputs[key] = data_fingerprint(value)["sha256"]
        return inputs
    if stage.name in ("convert", "quantize"):  # calibration and verification images come from the data
        return {"data": ctx.data_fingerprint["sha256"]}
    if stage.name == "bench":
        data = r.bench.get("data", r.data)
        return {"data": data_fingerprint(data)["sha256"]}
    if stage.name == "report":
        return {"recipe": {"name": r.name, "description": r.description, "data": r.data}}
    return {}


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON data (numbers from numpy scalars, anything else as its string)."""
    import json

    return json.loads(json.dumps(obj, default=lambda o: float(o) if hasattr(o, "__float__") else str(o)))

