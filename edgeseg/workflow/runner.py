"""Run a recipe's stages in order, skipping each one whose key matches its completed record.

The run folder (default ``runs/<recipe name>``)::

    recipe.json          the validated recipe as run (informational)
    stages/<stage>.json  completed stage records (key, outputs, sha256 of each output file)
    train/               best.pt, last.pt, history.json|csv
    artifacts/           the verified artifacts with their manifests (where the benchmark harness caches them)
    bench/               bench.json, bench.csv, bench.md
    model_card.json      the model card
    report.html          the one report: model card, artifacts, benchmark plots
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.workflow import stages as _stages
from edgeseg.workflow.cache import RunFolder, StageKey, now
from edgeseg.workflow.recipe import Recipe


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        folder: the run folder.
        records: the completed record of every stage.
        ran: stages that ran (with why), in order.
        cached: stages skipped because their record matched.
        failures: one line per artifact that failed (conversion, verification, or over the budget with
            ``quantize.over_budget: fail``); the run's exit code is 1 when there are any.
    """

    folder: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[tuple[str, str]] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def card(self) -> dict[str, Any]:
        import json

        rel = self.records["report"]["outputs"]["model_card"]
        return json.loads((self.folder / rel).read_text())

    @property
    def report(self) -> Path:
        return self.folder / self.records["report"]["outputs"]["report"]


def stage_key(stage: _stages.Stage, ctx: _stages.Context) -> StageKey:
    """The key of ``stage`` given the records of the stages before it."""
    return StageKey(stage=stage.name, version=stage.version,
                    sections={s: ctx.recipe.section(s) for s in stage.sections},
                    upstream={n: ctx.records[n]["outputs_sha"] for n in stage.needs},
                    inputs=_stages.stage_inputs(stage, ctx))


def run_recipe(recipe: Recipe, out: str | Path | None = None, redo: Iterable[str] = (),
               log: Callable[[str], None] | None = None) -> RunSummary:
    """Run (or resume) ``recipe`` in ``out``; stages whose records match are skipped and say so.

    Args:
        recipe: a validated recipe (:func:`~edgeseg.workflow.recipe.load_recipe`).
        out: the run folder (default ``runs/<recipe.name>``).
        redo: stages to run even when their record matches ("all" for every stage).
        log: progress callback, one line per call (default: stderr).

    Raises:
        ValueError: an unknown stage in ``redo``; anything a stage raises (its record is then not written,
            so the next run does it again).

    Examples:
        >>> from edgeseg.workflow import load_recipe, run_recipe
        >>> summary = run_recipe(load_recipe("synthetic"), "runs/synthetic")
        >>> summary.cached, summary.report
    """
    from edgeseg.common.io import atomic_write_json, check_writable_dir

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    redo = set(redo)
    if "all" in redo:
        redo = set(_stages.STAGE_NAMES)
    bad = sorted(redo - set(_stages.STAGE_NAMES))
    if bad:
        raise ValueError(f"unknown stage(s) {', '.join(bad)} to redo; stages: {', '.join(_stages.STAGE_NAMES)} "
                         "or all")
    root = check_writable_dir(out or Path("runs") / recipe.name)
    folder = RunFolder(root)
    atomic_write_json(root / "recipe.json", recipe.to_dict())
    ctx = _stages.Context(recipe=recipe, folder=folder, log=say)
    summary = RunSummary(folder=root)
    n = len(_stages.STAGES)
    say(f"edgeseg run {recipe.name}: {recipe.model} on {recipe.data} -> {root}")
    for i, stage in enumerate(_stages.STAGES, 1):
        key = stage_key(stage, ctx)
        why = "asked to redo it" if stage.name in redo else folder.why_stale(stage.name, key)
        rec = folder.load(stage.name)
        if why is None and rec is not None:  # why_stale found the record complete and matching
            why = _stages.retry_reason(stage.name, rec)
        if why is None and rec is not None:
            ctx.records[stage.name] = rec
            summary.cached.append(stage.name)
            say(f"[{i}/{n}] {stage.name}: skipped, cached (key {key.key[:12]}; completed {rec['finished']} in "
                f"{rec['elapsed_s']:.1f} s)")
            continue
        why = why or "no completed record"
        say(f"[{i}/{n}] {stage.name}: running ({why})")
        marker = folder.marker(stage.name)
        ctx.resume = bool(marker and marker.get("key") == key.key)
        ctx.previous = rec if rec is not None and rec.get("key") == key.key else None
        folder.start(stage.name, key)  # from here until complete(), the stage has no completed record
        started, t0 = now(), time.perf_counter()
        outputs, files = _stages.RUNNERS[stage.name](ctx)
        rec = folder.complete(stage.name, key, outputs, files, started, time.perf_counter() - t0)
        ctx.records[stage.name] = rec
        summary.ran.append((stage.name, why))
        say(f"[{i}/{n}] {stage.name}: done in {rec['elapsed_s']:.1f} s")
    summary.records = dict(ctx.records)
    summary.failures = verdict(recipe, ctx.records)
    return summary


def verdict(recipe: Recipe, records: dict[str, dict[str, Any]]) -> list[str]:
    """One line per artifact that failed: conversion, verification, or the budget (``over_budget: fail``)."""
    lines = []
    for stage in ("convert", "quantize"):
        out = records[stage]["outputs"]
        for f in out["failed"]:
            lines.append(f"{f['target']} {f['precision']}: conversion failed ({f['reason']})")
        for a in out["artifacts"]:
            if a["status"] == "parity-failed":
                why = "; ".join((a.get("parity") or {}).get("failures") or []) or "see its manifest"
                lines.append(f"{a['target']} {a['precision']}: failed verification ({why})")
            elif a["status"] == "over-budget" and recipe.quantize.over_budget == "fail":
                b = a["budget"]
                if a.get("refused"):
                    lines.append(f"{a['target']} int8: {a['refused']}")
                else:
                    lines.append(f"{a['target']} int8: Dice drop {b['dice_drop']:.4f} > budget "
                                 f"{b['max_dice_drop']:g}")
    return lines
