"""Per-op profiles in the bench (``edgeseg bench --profile``): each ok row's runtime's own op timings
(onnxruntime's profiler, OpenVINO's performance counters, torch.profiler for the reference; LiteRT and
ExecuTorch expose no op profiler through their Python APIs and are listed as such).

Profiles run after the measurements, in the bench's process, on one bench image: the profilers add their
own overhead, so their totals are read as shares, never as the row's latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeseg.benchmarks.results import OK, RunResult

RUNS = 20
TOP = 8


def summarize(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Top ops and the time share per op type of one profile."""
    total = sum(o["ms"] for o in ops) or 1.0
    by_type: dict[str, float] = {}
    for o in ops:
        by_type[o["op"]] = by_type.get(o["op"], 0.0) + o["ms"]
    return {
        "total_ms": round(total, 4),
        "top": [{**o, "ms": round(o["ms"], 4), "share": round(o["ms"] / total, 4)} for o in ops[:TOP]],
        "by_type": {k: round(v / total, 4) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
    }


def profile_rows(run: RunResult, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One profile summary per ok row (or the reason a row has none)."""
    import numpy as np
    from edgeseg.converters.calibration import load_images

    from edgeseg import runtimes

    say = log or (lambda _m: None)
    cfg = run.config
    out = []
    for r in run.rows:
        if r.status != OK or not r.artifact:
            continue
        entry: dict[str, Any] = {"row": f"{r.target}/{r.precision} ({r.runtime}, {r.device})"}
        try:
            with runtimes.load(r.artifact, runtime=r.runtime, device=r.device, threads=cfg.get("threads")) as rt:
                x = load_images(cfg.get("data") or "synthetic", 1, rt.manifest.preprocessing, "verification").images
                entry.update(summarize(rt.profile_ops(np.ascontiguousarray(x, dtype=np.float32), RUNS)))
        except NotImplementedError as exc:
            entry["error"] = str(exc)
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            entry["error"] = str(exc).splitlines()[0][:200]
        if "top" in entry:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in list(entry["by_type"].items())[:3])
            say(f"profile {entry['row']}: {shares}")
        out.append(entry)
    return out
