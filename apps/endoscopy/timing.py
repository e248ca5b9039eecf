"""Latency as the camera sees it: per-stage percentiles, the jitter of frame intervals and capture-to-shown time.

The demo's JSONL log (``--log``) has one record per shown frame with each stage's time (``read_ms``,
``pre_ms``, ``infer_ms``, ``post_ms``, ``stabilize_ms``, ``overlay_ms``, ``output_ms``), how long the frame
waited for the loop (``wait_ms``; live sources), the capture time ``t`` and the time it was shown ``t_shown``
(seconds from the start of the run). :func:`latency_report` turns the records into the table below;
``python -m edgeseg.apps.endoscopy.latency demo.jsonl`` prints it (:mod:`edgeseg.apps.endoscopy.latency`).

- stages: p50 / p90 / p99 / mean of each stage in ms. ``post`` is the model's post-processing plus the
  stabiliser (the ``stabilize`` row shows the stabiliser alone);
- ``e2e``: capture to shown (the frame read from the source until it is recorded, streamed and on screen);
  it includes the wait for the loop in live mode. Writing the log line comes after and is not in it;
- intervals: the time between frames shown (``shown``) and between frames captured (``captured``), with
  their jitter (standard deviation) in ms;
- ``fps``: frames logged over the wall time between the first and the last record (``t_shown``).

Examples:
    $ edgeseg demo --model ultralightunet-s --source synthetic --headless --realtime --log demo.jsonl
    $ python -m edgeseg.apps.endoscopy.latency demo.jsonl
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("read", "pre", "infer", "post", "overlay", "output")
ROWS = ("read", "pre", "infer", "post", "stabilize", "overlay", "output", "e2e")
PERCENTILES = (50, 90, 99)


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50 / p90 / p99 / mean / max of ``values`` (empty: {})."""
    if not len(values):
        return {}
    a = np.asarray(values, np.float64)
    out = {f"p{q}": float(np.percentile(a, q)) for q in PERCENTILES}
    out.update(mean=float(a.mean()), max=float(a.max()))
    return out


def intervals(times_s: Sequence[float]) -> dict[str, float]:
    """The intervals between successive times (s) in ms: percentiles, and ``jitter`` (their standard deviation)."""
    if len(times_s) < 2:
        return {}
    d = np.diff(np.asarray(times_s, np.float64)) * 1e3
    return {**percentiles(d), "jitter": float(d.std())}


class Stats:
    """Per-frame stage timings (ms), accumulated for the run's summary."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def add(self, **ms: float) -> None:
        self.rows.append(ms)

    def latency(self) -> dict[str, float]:
        """Inference mean / p50 / p90 / max."""
        if not self.rows:
            return {}
        p = percentiles([r["infer"] for r in self.rows])
        return {"mean": p["mean"], "p50": p["p50"], "p90": p["p90"], "max": p["max"]}

    def stages(self) -> dict[str, float]:
        """Mean ms per frame of each stage."""
        if not self.rows:
            return {}
        return {k: float(np.mean([r.get(k, 0.0) for r in self.rows])) for k in STAGES}

    def e2e(self) -> dict[str, float]:
        """Capture-to-shown percentiles (ms)."""
        return percentiles([r["e2e"] for r in self.rows if "e2e" in r])


def latency_report(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The latency table of a demo log's records (see the module docstring).

    Raises:
        ValueError: no records, or records without the stage times (a log from before they were recorded).
    """
    recs = list(records)
    if not recs:
        raise ValueError("the log holds no records: run the demo with --log OUT.jsonl for at least two frames")
    if "output_ms" not in recs[0]:
        raise ValueError("these records carry no per-stage times (output_ms, e2e_ms): the log was written by an "
                         "older demo; run it again")
    stages = {}
    for row in ROWS:
        key = f"{row}_ms"
        vals = [r[key] + (r.get("stabilize_ms", 0.0) if row == "post" else 0.0) for r in recs if key in r]
        if vals:
            stages[row] = percentiles(vals)
    shown = [r["t_shown"] for r in recs]
    span = shown[-1] - shown[0]
    return {
        "frames": len(recs),
        "fps": len(recs) / span if span > 0 else 0.0,
        "stages_ms": stages,
        "interval_ms": {"shown": intervals(shown), "captured": intervals([r["t"] for r in recs])},
        "dropped": int(recs[-1].get("dropped_total", 0)),
    }


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a demo JSONL log.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not JSON (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such log: {path}; write one with `edgeseg demo ... --log {path.name}`")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: not a JSON line; is this a demo --log file?") from None
    return out


def format_report(rep: dict[str, Any]) -> str:
    """The report as a plain table (ms)."""
    lines = [f"{rep['frames']} frames, {rep['fps']:.1f} FPS (frames over the wall time between the first and last "
             f"record), {rep['dropped']} dropped", "",
             f"{'stage':10s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'mean':>8s}"]
    for name, p in rep["stages_ms"].items():
        label = "capture->shown" if name == "e2e" else name
        lines.append(f"{label:10s} {p['p50']:8.2f} {p['p90']:8.2f} {p['p99']:8.2f} {p['mean']:8.2f}")
    for name, p in rep["interval_ms"].items():
        if p:
            lines.append(f"interval {name:9s} p50 {p['p50']:.2f}  p90 {p['p90']:.2f}  p99 {p['p99']:.2f}  "
                         f"jitter (sd) {p['jitter']:.2f}")
    return "\n".join(lines)
