"""One artifact of a ``convert_model`` call: converted in a staging folder (within its accuracy budget when it
has one), described by its manifest, verified against the FP32 torch model, and moved into place.

The artifact already in the output folder (and its manifest) stays untouched until the new one is complete: a
failed or refused re-conversion leaves it as it was, and one killed while moving files leaves files whose
hashes the old manifest does not match, which ``runtimes.load`` refuses.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.converters.base import Artifact, ConvertConfig, Converter
from edgeseg.converters.calibration import CalibrationSet
from edgeseg.converters.provenance import build_manifest
from edgeseg.converters.verify import Parity, run_artifact, verify_artifact
from edgeseg.runtimes.manifest import Manifest, manifest_path


@dataclass
class ConvertResult:
    """One converted artifact.

    Attributes:
        artifact: what the converter wrote (paths point at the final location).
        manifest_path: the JSON sidecar.
        manifest: its content.
        parity: the verification, or None with ``verify=False``.
    """

    artifact: Artifact
    manifest_path: Path
    manifest: Manifest
    parity: Parity | None
    refused: str | None = None  # why the artifact was not kept (it missed its accuracy budget)
    selection: dict[str, Any] | None = None  # --precision auto: the timings and the choice for its target

    @property
    def counts(self) -> bool:
        """Whether its failure fails the command: with --precision auto, only the chosen artifact's does."""
        return self.selection is None or self.selection.get("chosen") in (None, self.artifact.precision)

    @property
    def passed(self) -> bool:
        return self.refused is None and (self.parity is None or self.parity.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.artifact.path),
            "manifest": str(self.manifest_path),
            "target": self.artifact.target,
            "precision": self.artifact.precision,
            "scheme": self.manifest.quantization.get("scheme"),
            "layout": self.manifest.input.layout,
            "size_bytes": self.artifact.size_bytes,
            "convert_time_s": round(self.artifact.convert_time_s, 3),
            "parity": self.manifest.parity,
            "budget": self.manifest.quantization.get("budget"),
            "refused": self.refused,
            "selection": self.selection,
        }


def verified_on() -> dict[str, Any]:
    """The CPU a verification ran on, as int8 results depend on it (runtimes warn on another int8 path)."""
    from edgeseg.runtimes.sysinfo import cpu_info, int8_path, isa_summary

    info = cpu_info()
    return {"model": info["model"], "isa": isa_summary(info["isa"]), "int8_path": int8_path(info["isa"])}


@dataclass
class Context:
    """What every artifact of one ``convert_model`` call shares."""

    net: Any
    out: Path
    model_name: str
    model_cfg: dict[str, Any]
    pre: Any
    classes: int
    wrec: dict[str, Any]
    held_back: CalibrationSet | None
    threads: int | None
    say: Callable[[str], None]
    export_net: Any = None  # the copy that is exported (deploy-time rewrites applied); None: net
    rewrites: list[dict[str, Any]] | None = None
    reference: np.ndarray | None = None  # FP32 logits of the held-back images, computed once

    def reference_logits(self, manifest: Manifest) -> np.ndarray:
        if self.reference is None:
            from edgeseg.runtimes.torch_runtime import TorchRuntime

            assert self.held_back is not None
            ref = TorchRuntime.from_module(self.net, manifest, threads=self.threads)
            try:
                self.reference = ref.infer(np.ascontiguousarray(self.held_back.images, dtype=np.float32))
            finally:
                ref.close()
        return self.reference


def convert_one(ctx: Context, converter: Converter, sample: Any, cfg: ConvertConfig, file_name: str) -> ConvertResult:
    """Convert (within the accuracy budget when there is one), write the manifest, verify, move into place.
    The artifact already in ``out`` (and its manifest) stays untouched until the new one is complete."""
    out = ctx.out
    final = out / file_name
    final_manifest = manifest_path(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{file_name}.staging-", dir=out))
    try:

        def make(keep: Sequence[str]) -> tuple[Artifact, Manifest]:
            # the layers asked for (--keep-float) plus those the budget's search adds
            run_cfg = replace(cfg, keep_float=tuple(dict.fromkeys([*cfg.keep_float, *keep]))) if keep else cfg
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                art = converter.convert(ctx.export_net or ctx.net, sample, run_cfg, staging / file_name)
            if ctx.rewrites:
                art.extra = {**art.extra, "rewrites": ctx.rewrites}
            manifest = build_manifest(art, run_cfg, ctx.model_name, ctx.model_cfg, ctx.pre, ctx.classes, ctx.wrec)
            manifest.save(manifest_path(art.path))
            made[:] = [art, manifest]
            return art, manifest

        made: list[Any] = []
        budget = None
        if cfg.max_dice_drop is not None and ctx.held_back is not None:
            from edgeseg.converters.budget import BudgetNotMetError

            t0 = time.perf_counter()
            try:
                (art, manifest), budget = fit_budget(ctx, make, cfg)
            except BudgetNotMetError as exc:  # refused: nothing is moved into place, an old artifact stays
                ctx.say(f"  {exc.result.summary()}")
                art, manifest = made
                art.path, art.files, art.convert_time_s = final, [], time.perf_counter() - t0
                manifest.quantization["budget"] = exc.result.to_dict()
                parity = Parity(figures={}, tolerance={"max_dice_drop": float(cfg.max_dice_drop)},
                                failures=[str(exc)])
                manifest.parity = {**parity.to_dict(), "refused": True}
                return ConvertResult(artifact=art, manifest_path=final_manifest, manifest=manifest, parity=parity,
                                     refused=str(exc))
            art.convert_time_s = time.perf_counter() - t0
            manifest.quantization["budget"] = budget.to_dict()
            ctx.say(f"  {budget.summary()}")
        else:
            art, manifest = make(())
        parity = None
        if ctx.held_back is not None:
            held = ctx.held_back
            parity = verify_artifact(
                art.path, ctx.net, held.images, cfg.precision, held.labels, ctx.threads,
                reference=ctx.reference_logits(manifest),
            )
            manifest.parity = {**parity.to_dict(), "inputs": held.provenance, "cpu": verified_on()}
            if budget is not None and not budget.confirmed:
                parity.failures.append(
                    f"the accuracy budget held on the search images but not on the confirmation images "
                    f"({budget.metric} drop {budget.confirm['drop'] if budget.confirm else float('nan'):+.4f} > "
                    f"{budget.max_drop})"
                )
                manifest.parity = {**manifest.parity, "passed": False, "failures": list(parity.failures)}
        else:
            manifest.parity = {"verified": False, "reason": "conversion run with --no-verify"}
        # the old artifact is replaced file by file, then its manifest; until the manifest is replaced the old
        # manifest's hashes no longer match and runtimes refuse the mixed files (they never run silently)
        moved = []
        for f in art.files:  # the main file is last in art.files
            dest = out / Path(f).name
            os.replace(f, dest)
            moved.append(dest)
        art.files = moved
        art.path = out / art.path.name
        manifest.save(final_manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConvertResult(artifact=art, manifest_path=final_manifest, manifest=manifest, parity=parity)


MIN_BUDGET_IMAGES = 16  # per part (search, confirmation) of the held-back images


def fit_budget(ctx: Context, make: Callable[[Sequence[str]], Any], cfg: ConvertConfig) -> tuple[Any, Any]:
    from edgeseg.converters.budget import HeldBack, fit
    from edgeseg.converters.layerwise import explain

    held = ctx.held_back
    assert held is not None and cfg.max_dice_drop is not None

    def run(handle: tuple[Artifact, Manifest], images: np.ndarray) -> np.ndarray:
        return run_artifact(handle[0].path, images, cfg.precision, ctx.threads)[0]

    def rank(handle: tuple[Artifact, Manifest]) -> list[str]:
        # the whole search half: a layer's damage can depend on the image (OpenVINO's CA1 read 16 dB on one
        # set of 4 Kvasir images and 37 dB on another), and the ranking is cheap beside a conversion
        report = explain(handle[0].path, ctx.net, held.images[: max(1, len(held) // 2)], threads=ctx.threads)
        return report.ranked()

    first = make(())  # built here: its manifest gives the reference's pre- and post-processing
    reference = ctx.reference_logits(first[1])
    judged = HeldBack(held.images, reference, held.labels, first[1].postprocessing)
    return fit(make, run, rank, judged, cfg.max_dice_drop, log=ctx.say, first=first)

