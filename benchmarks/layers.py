"""The layer-wise section of the bench report: for one int8 artifact per backend, the error of every layer
against the FP32 torch model (:func:`edgeseg.converters.layerwise.explain`), and where the damage appears.

Runs in the bench's own process after the measurements (a few held-back images; seconds per artifact), so
it never disturbs a latency figure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeseg.benchmarks.results import OK, RunResult

IMAGES = 4


def layer_sections(run: RunResult, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One layer-wise report (a dict) per backend that has an ok int8 row; a backend that cannot show its
    layers is listed with the reason."""
    say = log or (lambda _m: None)
    cfg = run.config
    picked: dict[str, Any] = {}
    for r in run.rows:
        if r.precision == "int8" and r.status == OK and r.artifact and r.runtime not in picked:
            picked[r.runtime] = r
    if not picked:
        return []
    from edgeseg.converters.calibration import load_images
    from edgeseg.converters.layerwise import explain
    from edgeseg.runtimes.manifest import Manifest, manifest_path

    from edgeseg.weights import resolve

    # the reference row's "artifact" is the checkpoint every row was converted from (also for random weights,
    # which the harness saves once)
    ref = run.reference
    weights = ref.artifact if ref is not None and ref.artifact else cfg.get("weights")
    net = resolve(cfg["model"], weights).module.eval()
    out = []
    for runtime, row in picked.items():
        try:
            pre = Manifest.load(manifest_path(row.artifact)).preprocessing
            images = load_images(cfg.get("data") or "synthetic", IMAGES, pre, "verification").images
            report = explain(row.artifact, net, images, threads=cfg.get("threads"))
        except (NotImplementedError, ValueError, FileNotFoundError) as exc:
            out.append({"runtime": runtime, "artifact": row.artifact, "error": str(exc).splitlines()[0]})
            continue
        say(f"layers of {row.target}/int8 ({runtime}): first under {report.to_dict()['damage_db']:g} dB: "
            f"{report.first_damaged or 'none'}; most harmful: {', '.join(report.ranked()[:3])}")
        out.append({"runtime": runtime, **report.to_dict(), "ranked": report.ranked()[:8]})
    return out
