"""The stages of ``edgeseg run``, in order: train, convert, quantize, bench, report.

Each stage is a function ``run_<name>(ctx) -> (outputs, files)`` over the public APIs of the parts it uses:

- ``train``: :func:`edgeseg.train.loop.train` with the recipe's ``train`` options (any :class:`TrainConfig`
  field); an interrupted training resumes from its ``last.pt``;
- ``convert``: :func:`edgeseg.converters.convert_model`, each target x float precision, verified against the
  FP32 torch model on held-back images of the data;
- ``quantize``: the same for int8, calibrated on the data's train split; OpenVINO quantizes to the accuracy
  budget itself (``QuantOptions(max_dice_drop=...)``, NNCF accuracy control) and every int8 artifact is then
  held to it on the held-back labelled images: int8 Dice against the FP32 model's;
- ``bench``: :func:`edgeseg.benchmarks.harness.run_benchmark` over exactly those artifacts (they are written
  where the harness caches artifacts, so it measures them instead of converting again);
- ``report``: the model card (``model_card.json``) and one HTML report with it and the benchmark
  (:mod:`edgeseg.workflow.card`).

The stage list and the context a stage sees are in :mod:`edgeseg.workflow.context`.

A target whose backend is not installed is skipped with the extra that installs it. A conversion that fails
is recorded and the other artifacts go on (the run exits 1 at the end). The next run tries again what failed,
or what was skipped for a backend installed since, and keeps the artifacts the last try made and verified.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeseg.common.errors import first_line
from edgeseg.workflow.card import build_card, run_report  # the report stage, in its own module
from edgeseg.workflow.context import STAGE_NAMES, STAGES, Context, Outputs, Stage, stage_inputs
from edgeseg.workflow.context import plain as _plain

# ---------------------------------------------------------------------------------------------- train


def run_train(ctx: Context) -> Outputs:
    from edgeseg.models import get_model_cfg
    from edgeseg.train.loop import TrainConfig, train

    r = ctx.recipe
    out = ctx.folder.root / "train"
    resume = ctx.resume and (out / "last.pt").is_file()
    if not resume:  # a new key trains from scratch: an older run's checkpoints must not be mistaken for it
        for name in ("best.pt", "last.pt", "history.json", "history.csv"):
            (out / name).unlink(missing_ok=True)
    else:
        ctx.log(f"  resuming the interrupted training from {ctx.folder.rel(out / 'last.pt')}")
    options = {"img_size": int(get_model_cfg(r.model).input_size[-1]), "progress": sys.stderr.isatty(),
               **r.train}
    cfg = TrainConfig(model=r.model, data=r.data, out=str(out), resume=resume, **options)
    res = train(cfg)
    best = Path(res.best_path)
    if not best.is_file():
        raise ValueError(f"training wrote no {best.name} (no epoch was validated); check the train section")
    outputs = {"checkpoint": ctx.folder.rel(best), "img_size": cfg.img_size, "best": _plain(res.best),
               "epochs": cfg.epochs, "resumed": resume}
    return outputs, [best]


# ---------------------------------------------------------------------------- convert and quantize


def backend_missing(target: str) -> str | None:
    """Why ``target`` cannot be converted and verified here (its converter or runtime is not installed)."""
    from edgeseg.common.deps import MissingDependencyError
    from edgeseg.converters import get_converter, get_target
    from edgeseg.runtimes import get_runtime

    try:
        get_converter(target).check_available()
    except MissingDependencyError as exc:
        return first_line(exc)
    spec = get_target(target)
    rt = get_runtime(spec.runtime)
    if not rt.is_available():
        return (f"verifying {target} artifacts needs the {spec.runtime} runtime: "
                f"pip install 'edgeseg[{rt.extra}]' -c constraints.txt")
    return None


def _artifact_dir(ctx: Context) -> Path:
    """The benchmark harness's cache folder for these weights at this size (it then measures these files)."""
    from edgeseg.benchmarks.harness import artifact_path

    return artifact_path(ctx.artifacts_root, ctx.recipe.model, ctx.img_size, ctx.checkpoint_sha, "onnx",
                         "fp32").parent


def _convert(ctx: Context, jobs: list[tuple[str, list[str]]], quant: dict[str, Any]) -> Outputs:
    """Convert and verify each (target, precisions) job; returns the artifacts, the skipped and the failed."""
    from edgeseg.common.deps import MissingDependencyError
    from edgeseg.converters import ExportOptions, QuantOptions, VerifyOptions, convert_model, get_target

    r = ctx.recipe
    artifacts: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    files: list[Path] = []
    out_dir = _artifact_dir(ctx)
    export = ExportOptions(img_size=ctx.img_size, name=r.model, exporter=r.convert.exporter, opset=r.convert.opset,
                           simplify=r.convert.simplify)
    verify = VerifyOptions(images=r.verify.images, threads=r.verify.threads)
    for target, wanted in jobs:
        offered = get_target(target).precisions
        for p in [p for p in wanted if p not in offered]:
            skipped.append({"target": target, "precision": p, "reason": f"{target} makes {', '.join(offered)} only"})
        precisions = [p for p in wanted if p in offered]
        if not precisions:
            continue
        missing = backend_missing(target)
        if missing:
            for p in precisions:
                skipped.append({"target": target, "precision": p, "reason": missing, "missing_backend": True})
            ctx.log(f"  skipping {target} {','.join(precisions)}: {missing}")
            continue
        for p in list(precisions):  # a retry keeps what the last try with this key made and verified
            art = _reusable(ctx, target, p)
            if art is not None:
                ctx.log(f"  {target} {p}: kept from the last try ({art['path']})")
                artifacts.append(art)
                files += [ctx.folder.abs(f) for f in art["files"]]
                precisions.remove(p)
        if not precisions:
            continue
        q = dict(quant)
        if q.get("max_dice_drop") is not None and not get_target(target).accuracy_control:
            q["max_dice_drop"] = None  # held to the budget after conversion instead (see _budget)
        try:
            results = convert_model(r.model, target, precisions, weights=str(ctx.checkpoint), export=export,
                                    quant=QuantOptions(calib=r.data, **q), verify=verify, out_dir=out_dir,
                                    log=lambda m: ctx.log(f"  {m}"))
        except MissingDependencyError as exc:
            for p in precisions:
                skipped.append({"target": target, "precision": p, "reason": first_line(exc),
                                "missing_backend": True})
            continue
        except Exception as exc:  # recorded; the other targets go on and the run exits 1 at the end
            reason = f"{type(exc).__name__}: {first_line(exc, 300)}"
            ctx.log(f"  {target} {','.join(precisions)} failed: {reason}")
            for p in precisions:
                failed.append({"target": target, "precision": p, "reason": reason})
            continue
        for res in results:
            man = res.manifest
            # a converter may refuse an artifact (int8 that misses its accuracy budget): nothing is kept
            refused = getattr(res, "refused", None)
            if not refused and not Path(res.artifact.path).is_file():
                refused = "the converter kept no file"
            made = [] if refused else [Path(f) for f in res.artifact.files] + [res.manifest_path]
            status = "over-budget" if refused else "ok" if res.passed else "parity-failed"
            art = {"target": target, "precision": res.artifact.precision, "path": ctx.folder.rel(res.artifact.path),
                   "manifest": ctx.folder.rel(res.manifest_path), "files": [ctx.folder.rel(f) for f in made],
                   "kept": not refused, "refused": refused, "size_bytes": 0 if refused else res.artifact.size_bytes,
                   "convert_time_s": round(res.artifact.convert_time_s, 2), "parity": _plain(man.parity),
                   "quantization": _plain(man.quantization), "passed": res.passed, "status": status}
            artifacts.append(art)
            files += made
    return {"artifacts": artifacts, "skipped": skipped, "failed": failed, "dir": ctx.folder.rel(out_dir)}, files


def _reusable(ctx: Context, target: str, precision: str) -> dict[str, Any] | None:
    """The artifact the stage's last record (same key) holds for ``target``/``precision``, if its files are
    still the ones it hashed."""
    from edgeseg.common.io import sha256_file

    prev = ctx.previous or {}
    hashes = prev.get("files") or {}
    for art in (prev.get("outputs") or {}).get("artifacts", []):
        if (art["target"], art["precision"]) != (target, precision) or not art.get("kept") or not art.get("files"):
            continue
        for rel in art["files"]:
            path = ctx.folder.abs(rel)
            if rel not in hashes or not path.is_file() or sha256_file(path) != hashes[rel]:
                return None
        return dict(art)
    return None


def retry_reason(stage: str, rec: dict[str, Any]) -> str | None:
    """Why a completed convert/quantize record is tried again although its key matches: artifacts that failed
    last time, or targets skipped for a backend that is installed now (None: nothing to retry)."""
    if stage not in ("convert", "quantize"):
        return None
    out = rec.get("outputs") or {}
    failed = sorted({f"{f['target']} {f['precision']}" for f in out.get("failed", [])})
    if failed:
        return f"trying again what failed last time: {', '.join(failed)}"
    now_ok = sorted({s["target"] for s in out.get("skipped", [])
                     if s.get("missing_backend") and backend_missing(s["target"]) is None})
    if now_ok:
        return f"{', '.join(now_ok)} can be converted now (its backend is installed)"
    return None


def run_convert(ctx: Context) -> Outputs:
    c = ctx.recipe.convert
    return _convert(ctx, [(t, list(c.precisions)) for t in c.targets], {})


def _budget(art: dict[str, Any], max_drop: float | None) -> dict[str, Any]:
    """The accuracy budget of one int8 artifact: its Dice against the FP32 model's on the held-back images."""
    par = art.get("parity") or {}
    ref, cand = par.get("dice_reference"), par.get("dice_candidate")
    drop = None if ref is None or cand is None else float(ref) - float(cand)
    within = None if drop is None or max_drop is None else drop <= max_drop + 1e-9
    return {"max_dice_drop": max_drop, "dice_fp32": ref, "dice_int8": cand, "dice_drop": drop,
            "within": within, "images": par.get("n_images")}


def run_quantize(ctx: Context) -> Outputs:
    q = ctx.recipe.quantize
    quant = {"calib_size": q.calib_size, "calib_method": q.calib_method, "quantizer": q.quantizer, "isa": q.isa,
             "max_dice_drop": q.max_dice_drop}
    from dataclasses import fields

    from edgeseg.converters import QuantOptions

    if q.max_dice_drop is None and "budget" in {f.name for f in fields(QuantOptions)}:
        quant["budget"] = False  # no budget asked for: converters that search for one by default must not
    outputs, files = _convert(ctx, [(t, ["int8"]) for t in ctx.recipe.quantize_targets], quant)
    for art in outputs["artifacts"]:
        art["budget"] = _budget(art, q.max_dice_drop)
        if art["status"] == "ok" and art["budget"]["within"] is False:
            art["status"] = "over-budget"
        b = art["budget"]
        if art.get("refused"):
            ctx.log(f"  {art['target']} int8: not kept: {art['refused']}")
        elif b["dice_drop"] is not None:
            ctx.log(f"  {art['target']} int8: Dice {b['dice_int8']:.4f} vs fp32 {b['dice_fp32']:.4f} "
                    f"(drop {b['dice_drop']:+.4f}" + (f", budget {q.max_dice_drop:g}" if q.max_dice_drop else "")
                    + f"): {art['status']}")
    return outputs, files


# ---------------------------------------------------------------------------------------------- bench


def run_bench(ctx: Context) -> Outputs:
    from edgeseg.benchmarks.harness import BenchConfig, run_benchmark
    from edgeseg.benchmarks.report import write_reports
    from edgeseg.benchmarks.results import finalize_rows

    r = ctx.recipe
    if not r.bench_enabled:
        return {"skipped": "bench.enabled is false"}, []
    arts = [a for s in ("convert", "quantize") for a in ctx.outputs(s)["artifacts"] if a.get("kept", True)]
    if not arts:
        return {"skipped": "no artifact to benchmark"}, []
    # the harness measures a full targets x precisions matrix: one run per set of precisions made
    by_target: dict[str, list[str]] = {}
    for a in arts:
        by_target.setdefault(a["target"], []).append(a["precision"])
    groups: dict[tuple[str, ...], list[str]] = {}
    for target, precs in by_target.items():
        groups.setdefault(tuple(sorted(set(precs))), []).append(target)
    out = ctx.folder.root / "bench"
    merged: Any = None
    for made, targets in groups.items():
        cfg = BenchConfig(model=r.model, weights=str(ctx.checkpoint), targets=targets, precisions=list(made),
                          img_size=ctx.img_size, out=str(out), artifacts=str(ctx.artifacts_root), reuse=True,
                          **{"data": r.data, **r.bench_options()})
        run = run_benchmark(cfg, log=lambda m: ctx.log(f"  {m}"))
        if merged is None:
            merged = run
        else:
            merged.rows += [row for row in run.rows if not row.reference]
    finalize_rows(merged.rows)  # every row against the first run's reference
    fresh = [row.spec.label for row in merged.rows if not row.reference and row.status != "unavailable"
             and not row.reused and row.artifact]
    if fresh:  # the harness converted instead of measuring the verified files: say so, loudly
        ctx.log(f"  warning: the benchmark converted {', '.join(fresh)} itself instead of reusing the verified "
                "artifacts")
    paths = write_reports(merged, out, html=False)
    outputs = {"bench_json": ctx.folder.rel(paths["json"]), "run_id": merged.run_id, "rows": len(merged.rows),
               "status": merged.counts(), "not_reused": fresh}
    return outputs, [paths["json"]]



RUNNERS: dict[str, Callable[[Context], Outputs]] = {
    "train": run_train, "convert": run_convert, "quantize": run_quantize, "bench": run_bench, "report": run_report,
}
__all__ = ["STAGES", "STAGE_NAMES", "Context", "Outputs", "Stage", "build_card", "stage_inputs", "RUNNERS"]
