"""Report files of a run: JSON (everything), CSV (one line per row), Markdown table, and the HTML report.

All files are written atomically into the output folder: ``bench.json``, ``bench.csv``, ``bench.md``,
``report.html``. Torch-free (the HTML report needs matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgeseg.benchmarks.results import OK, Row, RunResult

from edgeseg.common.io import atomic_write_json, atomic_write_text

CSV_FIELDS = ("target", "precision", "runtime", "device", "status", "reason", "p50_ms", "p90_ms", "p99_ms",
              "mean_ms", "std_ms", "fps", "speedup", "first_inference_ms", "load_time_ms", "peak_rss_mb",
              "size_bytes", "threads", "dice", "iou", "recall", "seg_precision", "dice_drop", "agreement",
              "agreement_min", "max_abs_diff", "mean_abs_diff", "psnr_db", "convert_time_s", "reused",
              "artifact")


def performance_summary(run: RunResult) -> dict[str, Any]:
    """Headline ratios: the fastest ok row vs torch eager FP32, int8/fp16 vs fp32 on the same runtime and
    device, and every measured row's p50 relative to the compute floor (FLOPs / theoretical peak)."""
    rows = [r for r in run.rows if r.status == OK and r.p50]
    ref = run.reference
    floor = run.config.get("compute_floor_ms")
    out: dict[str, Any] = {"reference_p50_ms": ref.p50 if ref else None, "compute_floor_ms": floor}
    if rows:
        best = min(rows, key=lambda r: r.p50)
        out["fastest"] = {"row": best.spec.label, "p50_ms": best.p50,
                          "speedup_vs_torch": best.speedup, "x_compute_floor": best.p50 / floor if floor else None}
    by = {(r.runtime, r.device, r.target, r.precision): r for r in run.rows if r.p50}
    ratios = []
    for (rt, dev, target, prec), r in by.items():
        fp32 = by.get((rt, dev, target, "fp32"))
        if prec != "fp32" and fp32 is not None:
            ratios.append({"runtime": rt, "device": dev, "target": target, "precision": prec,
                           "p50_ms": r.p50, "fp32_p50_ms": fp32.p50, "speedup_vs_fp32": fp32.p50 / r.p50})
    out["vs_fp32_same_runtime"] = ratios
    out["recommendations"] = recommendations(run)
    out["x_compute_floor"] = {r.spec.label: r.p50 / floor for r in run.rows if r.p50 and floor}
    return out


def recommendations(run: RunResult) -> list[dict[str, Any]]:
    """Per runtime and device: the fastest artifact that passed its fidelity check, and plainly whether int8
    pays here (its p50 against fp32's on the same runtime, with the CPU's int8 path named)."""
    int8_path = (run.environment.get("cpu") or {}).get("int8_path")
    out = []
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in run.rows:
        if not r.reference and r.p50:
            groups.setdefault((r.runtime, r.device), []).append(r)
    for (rt, dev), rows in groups.items():
        ok = [r for r in rows if r.status == OK]
        by_prec = {r.precision: r for r in rows}
        fp32, int8 = by_prec.get("fp32"), by_prec.get("int8")
        rec: dict[str, Any] = {"runtime": rt, "device": dev, "pick": None, "int8_vs_fp32": None, "note": ""}
        if ok:
            best = min(ok, key=lambda r: r.p50)
            rec["pick"] = {"target": best.target, "precision": best.precision, "p50_ms": best.p50,
                           "dice_drop": best.dice_drop}
        if fp32 is not None and int8 is not None and fp32.p50 and int8.p50:
            ratio = int8.p50 / fp32.p50
            rec["int8_vs_fp32"] = ratio
            where = f" on this CPU (int8 path {int8_path})" if int8_path else " on this CPU"
            if int8.status != OK:
                rec["note"] = f"int8 failed its check ({int8.status}): not usable"
            elif ratio >= 1.0:
                rec["note"] = f"int8 does not pay{where}: {ratio:.2f}x the fp32 time"
            else:
                drop = "" if int8.dice_drop is None else f", Dice drop {int8.dice_drop:+.4f}"
                rec["note"] = f"int8 is {1 / ratio:.2f}x faster than fp32{where}{drop}"
        out.append(rec)
    return out


def recommendation_lines(recs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in recs:
        pick = r["pick"]
        use = "nothing passed" if pick is None else f"use {pick['target']}/{pick['precision']} ({pick['p50_ms']:.2f} ms)"
        lines.append(f"{r['runtime']} ({r['device']}): {use}" + (f"; {r['note']}" if r["note"] else ""))
    return lines


def row_flat(row: Row) -> dict[str, Any]:
    """The CSV view of a row: latency statistics as ``*_ms`` columns, lists left out."""
    d = row.to_dict()
    lat = d.pop("latency_ms") or {}
    for k in ("p50", "p90", "p99", "mean", "std"):
        d[f"{k}_ms"] = lat.get(k)
    return {k: d.get(k) for k in CSV_FIELDS}


def to_csv(run: RunResult) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in run.rows:
        w.writerow({k: ("" if v is None else v) for k, v in row_flat(r).items()})
    return buf.getvalue()


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


MD_HEADERS = ("row", "status", "p50 ms", "p90 ms", "p99 ms", "FPS", "vs torch", "size", "Dice", "IoU",
              "agreement", "max abs diff", "PSNR dB", "reason")


def md_cells(r: Row) -> list[str]:
    lat = r.latency_ms or {}
    label = f"{r.target}/{r.precision} {r.runtime} {r.device}" + (" (reference)" if r.reference else "")
    return [label, r.status, _f(lat.get("p50"), ".2f"), _f(lat.get("p90"), ".2f"), _f(lat.get("p99"), ".2f"),
            _f(r.fps, ".1f"), "-" if r.speedup is None else f"{r.speedup:.2f}x", _size(r.size_bytes),
            _f(r.dice, ".4f"), _f(r.iou, ".4f"), _f(r.agreement, ".4f"), _f(r.max_abs_diff, ".2e"),
            _f(r.psnr_db, ".1f"), (r.reason or (f"warning: {r.warning}" if r.warning else "")).replace("|", "/")]


def environment_line(env: dict[str, Any]) -> str:
    """One line: CPU, usable cores, ISA, OS, load average, threads."""
    cpu = env.get("cpu", {})
    isa = ",".join(cpu.get("isa", []))
    mhz = f" @ {cpu['mhz']:.0f} MHz" if cpu.get("mhz") else ""
    return (f"{cpu.get('model', '?')}{mhz}, {cpu.get('usable_cores', '?')} usable cores, ISA {isa}; "
            f"{env.get('os', {}).get('platform', '?')}; threads {env.get('threads')}; "
            f"load average {env.get('load_average')}")


def to_markdown(run: RunResult) -> str:
    cfg = run.config
    lines = [
        f"# edgeseg bench {run.run_id}",
        "",
        f"Model `{cfg.get('model')}` (weights: {cfg.get('weights') or 'random'}), data `{cfg.get('data')}` "
        f"split `{cfg.get('split')}` ({cfg.get('cases')} cases), {cfg.get('img_size')}x{cfg.get('img_size')}, "
        f"batch 1, {cfg.get('threads')} threads, {cfg.get('warmup')} warm-up + "
        f"{cfg.get('iters') or 'min-time ' + str(cfg.get('min_time')) + ' s'} timed inferences per row.",
        "",
        f"Environment: {environment_line(run.environment)}.",
        "",
        "| " + " | ".join(MD_HEADERS) + " |",
        "|" + "|".join("---" for _ in MD_HEADERS) + "|",
    ]
    lines += ["| " + " | ".join(md_cells(r)) + " |" for r in run.rows]
    floor = cfg.get("compute_floor_ms")
    if floor:
        lines += ["", f"Compute floor: {floor:.3f} ms ({cfg.get('macs', 0) / 1e9:.4f} GMAC at "
                      f"{run.environment.get('peak_gflops_fp32', 0):.0f} GFLOP/s FP32 theoretical peak of "
                      f"{run.environment.get('peak_cores')} cores)."]
    summ = performance_summary(run)
    if summ.get("fastest"):
        f = summ["fastest"]
        sp = "-" if f["speedup_vs_torch"] is None else f"{f['speedup_vs_torch']:.2f}x"
        xf = "" if f["x_compute_floor"] is None else f", {f['x_compute_floor']:.1f}x the compute floor"
        lines += ["", f"Fastest ok row: {f['row']} at {f['p50_ms']:.2f} ms p50 ({sp} torch eager FP32{xf})."]
    for r in summ["vs_fp32_same_runtime"]:
        lines.append(f"- {r['target']}/{r['precision']} on {r['runtime']} ({r['device']}): {r['p50_ms']:.2f} ms vs "
                     f"fp32 {r['fp32_p50_ms']:.2f} ms = {r['speedup_vs_fp32']:.2f}x")
    if summ["recommendations"]:
        lines += ["", "Recommendation per runtime (the fastest row that passed its check):"]
        lines += [f"- {line}" for line in recommendation_lines(summ["recommendations"])]
    lines += ["", "`vs torch` is the torch eager FP32 p50 divided by the row's p50; agreement is the mean "
                  "per-case Dice between the row's masks and the FP32 torch reference's; Dice is against "
                  "the labels.", ""]
    return "\n".join(lines)


def write_reports(run: RunResult, out_dir: str | Path, html: bool = True) -> dict[str, Path]:
    """Write every report file of ``run`` into ``out_dir``; returns {kind: path}.

    The HTML report is skipped (and its absence explained by a MissingDependencyError) only when
    matplotlib is missing and ``html`` is True: it is raised, so that the caller decides.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": atomic_write_json(out / "bench.json", {**run.to_dict(), "summary": performance_summary(run)}),
        "csv": atomic_write_text(out / "bench.csv", to_csv(run)),
        "markdown": atomic_write_text(out / "bench.md", to_markdown(run)),
    }
    if html:
        from edgeseg.benchmarks.html_report import write_html

        paths["html"] = write_html(run, out / "report.html")
    return paths
