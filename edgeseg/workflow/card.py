"""The report stage of ``edgeseg run``: the model card of the run and one HTML report with it and the benchmark."""

from __future__ import annotations

from typing import Any

from edgeseg.workflow.cache import digest, now
from edgeseg.workflow.context import Context, Outputs
from edgeseg.workflow.context import plain as _plain

# --------------------------------------------------------------------------------------------- report


def _bench_run(ctx: Context):
    import json

    from edgeseg.benchmarks.results import RunResult

    rel = ctx.outputs("bench").get("bench_json")
    if not rel:
        return None
    return RunResult.from_dict(json.loads(ctx.folder.abs(rel).read_text()))


def build_card(ctx: Context, run: Any = None) -> dict[str, Any]:
    """The model card of the run: data, training, weights, every artifact with its verification, budget and
    measured latency, the recommended artifact, the stages (keys, times)."""
    from edgeseg import __version__
    from edgeseg.weights import read_checkpoint

    r = ctx.recipe
    ckpt = read_checkpoint(ctx.checkpoint)
    recipe = ckpt.get("recipe") or {}
    metrics = ckpt.get("metrics") or {}
    train_out = ctx.outputs("train")
    rows = {}
    if run is not None:
        rows = {(row.target, row.precision): row for row in run.rows if not row.reference}
    arts = []
    for a in [a for s in ("convert", "quantize") for a in ctx.outputs(s)["artifacts"]]:
        par = a.get("parity") or {}
        entry = {k: a[k] for k in ("target", "precision", "path", "manifest", "size_bytes", "status")}
        entry["kept"], entry["refused"] = a.get("kept", True), a.get("refused")
        entry["scheme"] = (a.get("quantization") or {}).get("scheme")
        entry["verified"] = {k: par.get(k) for k in ("passed", "mask_agreement", "mask_agreement_min",
                                                        "max_abs_diff", "n_images", "runtime", "failures")}
        if "budget" in a:
            entry["budget"] = a["budget"]
        row = rows.get((a["target"], a["precision"]))
        if row is not None:
            entry["bench"] = {"status": row.status, "p50_ms": row.p50, "fps": row.fps, "dice": row.dice,
                              "dice_drop": row.dice_drop, "agreement": row.agreement, "runtime": row.runtime,
                              "speedup_vs_torch": row.speedup}
        arts.append(entry)
    ok = [e for e in arts if e["status"] == "ok" and (e.get("bench") or {}).get("status") == "ok"
          and e["bench"].get("p50_ms")]
    best = min(ok, key=lambda e: e["bench"]["p50_ms"]) if ok else None
    ref = run.reference if run is not None else None
    stages = [{"stage": n, "key": rec["key"][:16], "elapsed_s": rec.get("elapsed_s"), "finished": rec.get("finished")}
              for n, rec in ctx.records.items()]
    card = {
        "model": r.model,
        "recipe": {"name": r.name, "description": r.description, "path": r.path, "sha256": digest(r.to_dict()),
                   "sections": r.to_dict()},
        "data": {"name": r.report.data_name or r.data, "source": r.data, "terms": r.report.data_terms,
                 "fingerprint": ctx.data_fingerprint["sha256"], "train_split": recipe.get("train_data"),
                 "val_split": recipe.get("val_data")},
        "weights": {"file": train_out["checkpoint"], "sha256": ctx.checkpoint_sha,
                    "size_bytes": ctx.checkpoint.stat().st_size},
        "training": {"epochs_planned": recipe.get("epochs"), "best_epoch": metrics.get("epoch"),
                     "train_time_s": metrics.get("elapsed_s"), "resumed": train_out.get("resumed"),
                     "recipe": _plain(recipe)},
        "preprocessing": _plain(ckpt.get("preprocessing")),
        "val": {k.removeprefix("val_"): v for k, v in metrics.items() if k.startswith("val_")},
        "reference": None if ref is None else {"runtime": "torch fp32", "p50_ms": ref.p50, "dice": ref.dice},
        "artifacts": arts,
        "recommended": None if best is None else {
            "target": best["target"], "precision": best["precision"], "path": best["path"],
            "p50_ms": best["bench"]["p50_ms"], "dice": best["bench"]["dice"],
            "why": "the fastest artifact that passed verification, is within the accuracy budget and ran in the "
                   "benchmark"},
        "skipped": [s for st in ("convert", "quantize") for s in ctx.outputs(st)["skipped"]],
        "failed": [s for st in ("convert", "quantize") for s in ctx.outputs(st)["failed"]],
        "environment": None if run is None else _environment(run),
        "stages": stages,
        "notes": r.report.notes,
        "edgeseg_version": __version__,
        "created": now(),
    }
    return card


def _environment(run: Any) -> str:
    from edgeseg.benchmarks.report import environment_line

    return environment_line(run.environment)


def run_report(ctx: Context) -> Outputs:
    from edgeseg.benchmarks.card_report import write_model_card_report
    from edgeseg.common.io import atomic_write_json

    run = _bench_run(ctx)
    card = build_card(ctx, run)
    card_path = atomic_write_json(ctx.folder.root / "model_card.json", card)
    html, note = write_model_card_report(ctx.folder.root / "report.html", card, run)
    if note:
        ctx.log(f"  {note}")
    outputs = {"model_card": ctx.folder.rel(card_path), "report": ctx.folder.rel(html),
               "recommended": card["recommended"]}
    return outputs, [card_path, html]
