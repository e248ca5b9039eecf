"""The self-contained HTML report: the row table, the environment, and four matplotlib plots as base64 PNG.

Plots: latency per row (box plot of the timed samples), latency vs Dice with the Pareto front, fidelity per
row (mask agreement and max abs logit difference), and the per-case Dice distribution. No file beside the
HTML is needed and nothing is fetched when it is opened. Needs matplotlib (the ``bench`` extra).

``edgeseg run`` puts its model card above the benchmark (:func:`write_model_card_report`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from edgeseg.benchmarks.report import MD_HEADERS, environment_line, md_cells
from edgeseg.benchmarks.results import OK, Row, RunResult
from edgeseg.benchmarks.stats import pareto_front

from edgeseg.common.deps import require
from edgeseg.common.io import atomic_write_text

STATUS_COLORS = {"ok": "#2b8a3e", "fidelity-failed": "#e8590c", "load-failed": "#c92a2a",
                 "convert-failed": "#862e9c", "unavailable": "#868e96"}


def _plt():
    mpl = require("matplotlib", "the HTML benchmark report")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _label(r: Row) -> str:
    return f"{r.target}/{r.precision} {r.runtime}" + (f" {r.device}" if r.device != "cpu" else "")


def _wide(values: list[float]) -> bool:
    """Whether values span more than 20x (then a log axis keeps the fast rows readable)."""
    pos = [v for v in values if v and v > 0]
    return bool(pos) and max(pos) / min(pos) > 20


def _empty(plt, text: str) -> str:
    fig, ax = plt.subplots(figsize=(8, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return _png(fig)


def plot_latency(run: RunResult) -> str:
    """Box plot of each measured row's latency samples (p50 written beside it)."""
    plt = _plt()
    rows = [r for r in run.rows if r.samples_ms]
    if not rows:
        return _empty(plt, "no row was measured")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    pos = list(range(len(rows)))[::-1]
    bp = ax.boxplot([r.samples_ms for r in rows], positions=pos, orientation="horizontal", widths=0.6,
                    patch_artist=True, showfliers=True, flierprops={"markersize": 2})
    for patch, r in zip(bp["boxes"], rows):
        patch.set_facecolor(STATUS_COLORS.get(r.status, "#adb5bd"))
        patch.set_alpha(0.6)
    for p, r in zip(pos, rows):
        ax.annotate(f" p50 {r.p50:.1f} ms", (max(r.samples_ms), p), va="center", fontsize=8)
    ax.set_yticks(pos, [_label(r) for r in rows])
    if _wide([s for r in rows for s in r.samples_ms]):
        ax.set_xscale("log")
    ax.set_xlabel("latency per inference (ms), batch 1" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_title("Latency per row (box: p25-p75, whiskers 1.5 IQR)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_pareto(run: RunResult) -> str:
    """Latency (p50) vs Dice per row, with the Pareto front (faster and at least as accurate)."""
    plt = _plt()
    rows = [r for r in run.rows if r.p50 is not None and r.dice is not None]
    if not rows:
        return _empty(plt, "no row has both latency and Dice")
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.scatter(r.p50, r.dice, s=60, color=STATUS_COLORS.get(r.status, "#adb5bd"),
                   marker="*" if r.reference else "o", zorder=3)
        ax.annotate(_label(r), (r.p50, r.dice), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ok = [r for r in rows if r.status == OK]
    front = [ok[i] for i in pareto_front([(r.p50, r.dice) for r in ok])]
    if len(front) > 1:
        ax.plot([r.p50 for r in front], [r.dice for r in front], "--", color="#1971c2", label="Pareto front")
        ax.legend(loc="lower right")
    if _wide([r.p50 for r in rows]):
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency (ms)" + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("Dice vs labels (mean over cases)")
    ax.set_title("Latency vs accuracy (star: FP32 torch reference)")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_fidelity(run: RunResult) -> str:
    """Mask agreement and max abs logit difference of each candidate vs the FP32 reference."""
    plt = _plt()
    rows = [r for r in run.rows if r.agreement is not None and not r.reference]
    if not rows:
        return _empty(plt, "no candidate row has fidelity figures")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.4), sharey=True)
    pos = list(range(len(rows)))[::-1]
    colors = [STATUS_COLORS.get(r.status, "#adb5bd") for r in rows]
    a1.barh(pos, [r.agreement for r in rows], color=colors, alpha=0.7)
    lo = min(r.agreement for r in rows)
    a1.set_xlim(max(0.0, min(0.9, lo - 0.02)), 1.0005)
    a1.set_yticks(pos, [_label(r) for r in rows])
    a1.set_xlabel("mask agreement (Dice vs FP32 reference masks)")
    a1.grid(axis="x", alpha=0.3)
    diffs = [max(r.max_abs_diff or 0.0, 1e-9) for r in rows]
    a2.barh(pos, diffs, color=colors, alpha=0.7)
    a2.set_xscale("log")
    a2.set_xlabel("max |logit - reference logit| (log)")
    a2.grid(axis="x", alpha=0.3)
    fig.suptitle("Fidelity against the FP32 torch reference")
    return _png(fig)


def plot_dice_distribution(run: RunResult) -> str:
    """Per-case Dice (vs labels) of each row with accuracy figures."""
    plt = _plt()
    rows = [r for r in run.rows if r.dice_per_case]
    if not rows:
        return _empty(plt, "no row has per-case Dice")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    pos = list(range(len(rows)))[::-1]
    bp = ax.boxplot([r.dice_per_case for r in rows], positions=pos, orientation="horizontal", widths=0.6,
                    patch_artist=True, flierprops={"markersize": 2})
    for patch, r in zip(bp["boxes"], rows):
        patch.set_facecolor(STATUS_COLORS.get(r.status, "#adb5bd"))
        patch.set_alpha(0.6)
    ax.set_yticks(pos, [_label(r) for r in rows])
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"Dice per case ({len(rows[0].dice_per_case)} cases)")
    ax.set_title("Per-case Dice distribution")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#212529}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #dee2e6;padding:3px 7px;text-align:right}
th{background:#f1f3f5}td:first-child,td:nth-child(2),td:last-child{text-align:left}
.s-ok{color:#2b8a3e}.s-fidelity-failed{color:#e8590c}.s-load-failed,.s-convert-failed{color:#c92a2a}
.s-unavailable{color:#868e96}img{max-width:100%;display:block;margin:12px 0}
pre{background:#f8f9fa;padding:8px;font-size:12px;overflow-x:auto}
"""


def plot_layers(section: dict) -> str:
    """SQNR per layer (execution order) of one artifact, the first damaged layer marked."""
    plt = _plt()
    layers = [x for x in section.get("layers", []) if x.get("leaf", True)]
    if not layers:
        return _empty(plt, "no layer compared")
    sqnr = [60.0 if x["sqnr_db"] is None else min(float(x["sqnr_db"]), 60.0) for x in layers]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(range(len(sqnr)), sqnr, marker=".", lw=1)
    ax.axhline(section.get("damage_db", 15.0), color="#c92a2a", lw=0.8, ls="--")
    names = [x["name"] for x in layers]
    first = section.get("first_damaged")
    if first in names:
        i = names.index(first)
        ax.axvline(i, color="#c92a2a", lw=1)
        ax.annotate(f"first damaged: {first}", (i, sqnr[i]), xytext=(5, 10), textcoords="offset points",
                    fontsize=8, color="#c92a2a")
    for name in section.get("ranked", [])[:3]:
        if name in names:
            i = names.index(name)
            ax.annotate(name, (i, sqnr[i]), xytext=(0, -14), textcoords="offset points", fontsize=7, ha="center")
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel("SQNR vs FP32 (dB)")
    ax.set_title(f"{section.get('target')} int8 ({section.get('runtime')}): {len(layers)} layers, "
                 f"{section.get('n_images')} images")
    fig.tight_layout()
    return _png(fig)


def _layer_section(sections: list[dict]) -> str:
    """The layer-wise section: per backend, the SQNR plot and the most harmful layers."""
    if not sections:
        return ""
    esc = html.escape
    parts = ["<h2>Layer-wise divergence of the int8 artifacts</h2><p>Each layer's output compared with the FP32 "
             "torch model's (relative error, SQNR, linear CKA), read from the artifact's own runtime; the red line "
             "marks the first layer under the damage threshold. 'Most harmful' ranks the damage each layer adds "
             "beyond its inputs (what the accuracy budget keeps in float first).</p>"]
    for sec in sections:
        if "error" in sec:
            parts.append(f"<h3>{esc(str(sec.get('runtime')))}</h3><p>not compared: {esc(sec['error'])}</p>")
            continue
        parts.append(f"<h3>{esc(str(sec.get('target')))} int8 ({esc(str(sec.get('runtime')))})</h3>")
        parts.append(f'<img alt="layers {esc(str(sec.get("runtime")))}" src="data:image/png;base64,{plot_layers(sec)}">')
        by = {x["name"]: x for x in sec.get("layers", [])}
        rows = "".join(
            f"<tr><td>{esc(n)}</td><td>{fmt_cell(by[n].get('sqnr_db'), '.2f')}</td><td>{fmt_cell(by[n].get('drop_db'), '.2f')}"
            f"</td><td>{fmt_cell(by[n].get('rel_error'), '.4f')}</td><td>{fmt_cell(by[n].get('cka'), '.4f')}</td></tr>"
            for n in sec.get("ranked", [])[:5] if n in by)
        parts.append("<table><thead><tr><th>most harmful layers</th><th>SQNR dB</th><th>drop dB</th>"
                     f"<th>rel err</th><th>CKA</th></tr></thead><tbody>{rows}</tbody></table>")
        notes = sec.get("notes") or []
        if notes:
            parts.append(f"<p>{esc('; '.join(notes[:3]))}</p>")
    return "".join(parts)


def plot_profiles(profiles: list[dict]) -> str:
    """Stacked bars: each profiled row's time share by op type (the five largest types, the rest as other)."""
    plt = _plt()
    rows = [p for p in profiles if "by_type" in p]
    if not rows:
        return _empty(plt, "no profile")
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.4))
    labels = [p["row"] for p in rows]
    types: list[str] = []
    for p in rows:
        types += [t for t in list(p["by_type"])[:5] if t not in types]
    left = [0.0] * len(rows)
    cmap = plt.get_cmap("tab20")
    for i, t in enumerate([*types, "other"]):
        vals = [(1.0 - sum(v for k, v in p["by_type"].items() if k in types)) if t == "other"
                else p["by_type"].get(t, 0.0) for p in rows]
        ax.barh(labels, vals, left=left, color=cmap(i % 20), label=t)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("share of profiled time")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    return _png(fig)


def _row_roof(p: dict) -> str:
    r = p.get("roofline") or {}
    if not r.get("bound"):
        return ""
    return (f"<p>Roofline: {r['gflop']:.3f} GFLOP, {r['mbytes']:.1f} MB moved, {r['intensity']} FLOP/byte "
            f"(ridge {r['ridge']}): <b>{r['bound']}-bound</b>; floor {r['floor_ms']:.3f} ms, p50 "
            f"{r.get('of_floor', '-')}x the floor ({r.get('attained_gflops', '-')} GFLOP/s, "
            f"{r.get('attained_gbs', '-')} GB/s).</p>")


def _op_roof(o: dict) -> str:
    r = o.get("roofline")
    if not r:
        return "<td colspan=5>-</td>"
    return (f"<td>{html.escape(o.get('kind', ''))}</td><td>{r['intensity']}</td><td>{r.get('bound', '-')}</td>"
            f"<td>{r.get('attained_gbs', '-')}</td><td>{r.get('of_floor', '-')}</td>")


def _profile_section(profiles: list[dict]) -> str:
    if not profiles:
        return ""
    esc = html.escape
    parts = ["<h2>Per-op profiles</h2><p>Each runtime's own profiler, one image, after the timing (profilers add "
             "overhead: read shares, not latency).</p>",
             f'<img alt="profiles" src="data:image/png;base64,{plot_profiles(profiles)}">']
    for p in profiles:
        if "error" in p:
            parts.append(f"<p><b>{esc(p['row'])}</b>: no profile ({esc(p['error'])})</p>{_row_roof(p)}")
            continue
        rows = "".join(f"<tr><td>{esc(o['name'])}</td><td>{esc(o['op'])}</td><td>{o['ms']:.3f}</td>"
                       f"<td>{o['share']:.1%}</td>{_op_roof(o)}</tr>" for o in p["top"][:5])
        parts.append(f"<h3>{esc(p['row'])}</h3>{_row_roof(p)}<table><thead><tr><th>op</th><th>type</th><th>ms</th>"
                     "<th>share</th><th>layer kind</th><th>FLOP/byte</th><th>bound</th><th>GB/s</th>"
                     f"<th>x floor</th></tr></thead><tbody>{rows}</tbody></table>")
    return "".join(parts)


def _video_section(video: list[dict]) -> str:
    if not video:
        return ""
    parts = []
    for v in video:
        if "error" in v:
            parts.append(f"<p><b>{html.escape(v['row'])}</b>: clips not scored ({html.escape(v['error'])})</p>")
        else:
            parts.append(clip_section(v["results"], {"row": v["row"], "clips": v["clips"]}))
    return "".join(parts)


def render_html(run: RunResult) -> str:
    """The whole report as one HTML string (images inline)."""
    esc = html.escape
    cfg = run.config
    head = "".join(f"<th>{esc(h)}</th>" for h in MD_HEADERS)
    body = []
    for r in run.rows:
        cells = md_cells(r)
        tds = "".join(f"<td>{esc(c)}</td>" for c in cells)
        tds = tds.replace(f"<td>{esc(r.status)}</td>", f'<td class="s-{esc(r.status)}">{esc(r.status)}</td>', 1)
        body.append(f"<tr>{tds}</tr>")
    plots = [("Latency per row", plot_latency(run)), ("Latency vs Dice", plot_pareto(run)),
             ("Fidelity per row", plot_fidelity(run)), ("Per-case Dice", plot_dice_distribution(run))]
    figs = "".join(f'<h2>{esc(t)}</h2><img alt="{esc(t)}" src="data:image/png;base64,{b64}">' for t, b64 in plots)
    floor = cfg.get("compute_floor_ms")
    floor_html = (f"<p>Compute floor: {floor:.3f} ms ({cfg.get('macs', 0) / 1e9:.4f} GMAC at the "
                  f"theoretical FP32 peak).</p>" if floor else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeseg bench {esc(run.run_id)}</title>
<style>{CSS}</style></head><body>
<h1>edgeseg bench <code>{esc(run.run_id)}</code></h1>
<p>Model <b>{esc(str(cfg.get('model')))}</b> (weights: {esc(str(cfg.get('weights') or 'random'))}), data
<b>{esc(str(cfg.get('data')))}</b> split {esc(str(cfg.get('split')))} ({esc(str(cfg.get('cases')))} cases),
{esc(str(cfg.get('img_size')))} px, batch 1, {esc(str(cfg.get('threads')))} threads. Created {esc(run.created)}.</p>
<p>Environment: {esc(environment_line(run.environment))}</p>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{floor_html}
{figs}
{_layer_section(run.layers)}
{_profile_section(run.profiles)}
{_video_section(run.video)}
<h2>Environment</h2><pre>{esc(json.dumps(run.environment, indent=2, default=str))}</pre>
<h2>Configuration</h2><pre>{esc(json.dumps(run.config, indent=2, default=str))}</pre>
</body></html>
"""


def write_html(run: RunResult, path: str | Path) -> Path:
    """Write the self-contained HTML report atomically."""
    return atomic_write_text(path, render_html(run))


def fmt_cell(v, spec: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and spec:
        return format(v, spec)
    return str(v)


# ---- steadiness on video clips (edgeseg.benchmarks.temporal, `edgeseg evaluate --video`) ----------------------
_CLIP_COLUMNS = (("dice", "Dice / frame", ".4f"), ("dice_in_view", "Dice, frames with a polyp", ".4f"),
                 ("clean_share", "polyp-free frames shown clean", ".3f"), ("f2f_iou", "frame-to-frame IoU", ".3f"),
                 ("flicker_per_s", "region-count changes / s", ".2f"), ("fp_per_frame", "false regions / frame", ".3f"),
                 ("delay_frames", "delay to first box (frames)", ".2f"), ("delay_ms", "delay (ms)", ".0f"),
                 ("missed", "appearances missed", ""), ("ms", "stabiliser ms / frame", ".2f"))


def plot_clip_stability(res: dict[str, dict]) -> str:
    """Flicker and false regions per stabiliser setting, side by side."""
    plt = _plt()
    if not res:
        return _empty(plt, "no clip was scored")
    names = list(res)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.4 * len(names) + 1.6))
    for ax, (key, label) in zip(axes, (("flicker_per_s", "region-count changes per second"),
                                       ("fp_per_frame", "false-positive regions per frame"))):
        vals = [float(res[n][key]) for n in names]
        ax.barh(names[::-1], vals[::-1], color="#4c6ef5", alpha=0.7)
        for i, v in enumerate(vals[::-1]):
            ax.annotate(f" {v:.2f}", (v, i), va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    truth = res[names[0]].get("truth_changes_per_s")
    if truth is not None:
        axes[0].axvline(truth, color="#2b8a3e", lw=1, ls="--")
        axes[0].annotate("truth", (truth, len(names) - 0.6), fontsize=7, color="#2b8a3e")
    fig.tight_layout()
    return _png(fig)


def clip_section(res: dict[str, dict], facts: dict | None = None) -> str:
    """The clip-steadiness section: the figures per stabiliser setting and the flicker/false-region plot."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for _, h, _ in _CLIP_COLUMNS)
    rows = "".join(f"<tr><td>{esc(n)}</td>" + "".join(f"<td>{fmt_cell(r.get(k), spec)}</td>" for k, _, spec in
                                                    _CLIP_COLUMNS) + "</tr>" for n, r in res.items())
    first = next(iter(res.values()), {})
    truth = (f"<p>The truth's own steadiness: frame-to-frame IoU {first['truth_f2f_iou']:.3f}, "
             f"{first['truth_changes_per_s']:.2f} region-count changes per second; {first['frames']} frames in "
             f"{first['clips']} clips, {first['appearances']} polyp appearances.</p>" if first else "")
    facts_html = "".join(f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in (facts or {}).items())
    return (f"<h2>Steadiness on video clips</h2><p>The model runs once per frame; each stabiliser setting sees the "
            f"same masks (raw: smoothing off; default: what the demo shows).</p><ul>{facts_html}</ul>"
            f"<table><thead><tr><th>setting</th>{head}</tr></thead><tbody>{rows}</tbody></table>{truth}"
            f'<img alt="clip steadiness" src="data:image/png;base64,{plot_clip_stability(res)}">')


def write_clip_report(res: dict[str, dict], path: str | Path, facts: dict | None = None) -> Path:
    """A self-contained HTML page with :func:`clip_section`, written atomically."""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgeseg clips</title>'
            f"<style>{CSS}</style></head><body><h1>edgeseg: steadiness on video clips</h1>"
            f"{clip_section(res, facts)}</body></html>\n")
    return atomic_write_text(path, page)
