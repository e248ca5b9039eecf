"""The model card of an ``edgeseg run`` as HTML, alone or at the top of the run's bench report."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgeseg.benchmarks.html_report import CSS, fmt_cell, render_html
from edgeseg.benchmarks.results import RunResult

from edgeseg.common.io import atomic_write_text


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def render_model_card(card: dict) -> str:
    """The model card of an ``edgeseg run`` as an HTML section: data, training, weights, every artifact with
    its verification, accuracy budget and measured latency, the recommended artifact and the stages."""
    esc = html.escape
    data, tr, val, w = card.get("data") or {}, card.get("training") or {}, card.get("val") or {}, card.get("weights") or {}
    recipe = card.get("recipe") or {}
    facts = [
        ("model", card.get("model")),
        ("data", f"{data.get('name')} ({data.get('source')})"),
        ("train / val split", f"{(data.get('train_split') or {}).get('n', '-')} / {(data.get('val_split') or {}).get('n', '-')}"),
        ("data terms", data.get("terms") or "-"),
        ("weights", f"{w.get('file')} (sha256 {str(w.get('sha256'))[:16]}..., {_bytes(w.get('size_bytes'))})"),
        ("training", f"best epoch {tr.get('best_epoch')} of {tr.get('epochs_planned')}, "
                     f"{fmt_cell(tr.get('train_time_s'))} s" + (" (resumed)" if tr.get("resumed") else "")
                     + (f", from {(tr.get('recipe') or {}).get('init')}" if (tr.get("recipe") or {}).get("init") else "")),
        ("val", ", ".join(f"{k} {fmt_cell(v, '.4f')}" for k, v in val.items() if k != "n") or "-"),
        ("pre-processing", json.dumps(card.get("preprocessing"))),
    ]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    heads = ["artifact", "target", "precision", "size", "status", "agreement", "max abs", "Dice fp32 / int8",
             "budget", "p50 ms", "bench Dice", "bench"]
    rows = []
    for a in card.get("artifacts") or []:
        ver, bud, b = a.get("verified") or {}, a.get("budget") or {}, a.get("bench") or {}
        dice = "-" if not bud else f"{fmt_cell(bud.get('dice_fp32'), '.4f')} / {fmt_cell(bud.get('dice_int8'), '.4f')}"
        budget = "-" if not bud.get("max_dice_drop") else \
            f"drop {fmt_cell(bud.get('dice_drop'), '+.4f')} vs {bud['max_dice_drop']:g}"
        status = a.get("status", "-") + ("" if a.get("kept", True) else " (not kept)")
        cells = [a.get("path"), a.get("target"), a.get("precision"), _bytes(a.get("size_bytes")), status,
                 fmt_cell(ver.get("mask_agreement"), ".4f"), fmt_cell(ver.get("max_abs_diff"), ".2g"), dice, budget,
                 fmt_cell(b.get("p50_ms"), ".2f"), fmt_cell(b.get("dice"), ".4f"), b.get("status", "-")]
        tds = "".join(f"<td>{esc(str(c))}</td>" for c in cells)
        rows.append(f'<tr class="s-{"ok" if status == "ok" else "fidelity-failed"}" '
                    f'title="{esc(str(a.get("refused") or ""))}">{tds}</tr>')
    rec = card.get("recommended")
    rec_html = ("<p>No artifact is recommended: none passed verification within the budget and ran in the "
                "benchmark.</p>" if not rec else
                f"<p>Recommended: <b>{esc(str(rec['path']))}</b> ({esc(rec['target'])} {esc(rec['precision'])}, "
                f"p50 {fmt_cell(rec.get('p50_ms'), '.2f')} ms, Dice {fmt_cell(rec.get('dice'), '.4f')}): {esc(rec['why'])}.</p>")
    notes = [f"skipped {s.get('target')} {s.get('precision', '')}: {s.get('reason')}" for s in card.get("skipped") or []]
    notes += [f"FAILED {s.get('target')} {s.get('precision', '')}: {s.get('reason')}" for s in card.get("failed") or []]
    notes += [f"not kept {a.get('target')} {a.get('precision')}: {a['refused']}" for a in card.get("artifacts") or []
              if a.get("refused")]
    notes_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
    stages = "".join(f"<tr><td>{esc(s['stage'])}</td><td>{esc(str(s.get('key')))}</td>"
                     f"<td>{fmt_cell(s.get('elapsed_s'), '.1f')}</td><td>{esc(str(s.get('finished')))}</td></tr>"
                     for s in card.get("stages") or [])
    return f"""<section id="model-card">
<h1>edgeseg run <code>{esc(str(recipe.get('name')))}</code>: model card</h1>
<p>{esc(str(recipe.get('description') or ''))}</p>
<table>{facts_html}</table>
<h2>Artifacts (verified against the FP32 torch model)</h2>
<table><thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in heads)}</tr></thead><tbody>{''.join(rows)}</tbody></table>
{rec_html}
{f'<ul>{notes_html}</ul>' if notes_html else ''}
<h2>Stages</h2>
<table><thead><tr><th>stage</th><th>key</th><th>seconds</th><th>completed</th></tr></thead><tbody>{stages}</tbody></table>
<p>{esc(str(card.get('notes') or ''))}</p>
<details><summary>Recipe</summary><pre>{esc(json.dumps(recipe.get('sections'), indent=2, default=str))}</pre></details>
</section>
"""


def write_model_card_report(path: str | Path, card: dict, run: RunResult | None = None) -> tuple[Path, str]:
    """Write the report of an ``edgeseg run`` atomically: the model card, then the benchmark report of ``run``.

    Without a run, or without matplotlib for its plots, the page has the model card alone. Returns the path
    and a note saying what was left out (empty when nothing was).
    """
    from edgeseg.common.deps import MissingDependencyError

    card_html = render_model_card(card)
    note = ""
    if run is not None:
        try:
            page = render_html(run)
            return atomic_write_text(path, page.replace("<body>", f"<body>\n{card_html}<hr>", 1)), note
        except MissingDependencyError as exc:
            note = f"the report has no benchmark plots: {str(exc).splitlines()[0]}"
    esc = html.escape
    title = esc(str((card.get("recipe") or {}).get("name")))
    extra = f"<p>{esc(note)}</p>" if note else ""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgeseg run {title}</title>'
            f"<style>{CSS}</style></head><body>\n{card_html}{extra}</body></html>\n")
    return atomic_write_text(path, page), note
