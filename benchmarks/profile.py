"""Per-op profiles in the bench (``edgeseg bench --profile``): each ok row's runtime's own op timings
(onnxruntime's profiler, OpenVINO's performance counters, torch.profiler for the reference; LiteRT and
ExecuTorch expose no op profiler through their Python APIs and are listed as such).

Each row also gets its roofline (:mod:`edgeseg.benchmarks.roofline`): FLOPs and bytes of the model at the
row's precision against its p50, and for each of its slowest ops that maps onto a layer, whether it is
memory-bound or compute-bound and how close it came.

Profiles run after the measurements, in the bench's process, on one bench image: the profilers add their
own overhead, so their totals are read as shares, never as the row's latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeseg.benchmarks.results import OK, RunResult
from edgeseg.benchmarks.roofline import op_roofline, row_roofline

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


def _model_costs(cfg: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], Any]:
    """The model's per-layer costs at the run's size and a name-scope index over it ({} when unknown)."""
    if not cfg.get("model") or not cfg.get("img_size"):
        return {}, None
    import warnings
    from pathlib import Path

    from edgeseg.converters.scopes import ModuleIndex

    from edgeseg.profiling import layer_costs
    from edgeseg.weights import resolve

    weights = cfg.get("weights_path")
    with warnings.catch_warnings():  # random weights: the costs depend on the shapes only
        warnings.simplefilter("ignore")
        # the run's model as its checkpoint builds it (e.g. skip_attention), by the one weights rule
        net = resolve(cfg["model"], weights if weights and Path(weights).is_file() else None, seed=0).module
    return layer_costs(net, int(cfg["img_size"])), ModuleIndex(net)


def profile_rows(run: RunResult, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One profile summary per ok row (or the reason a row has none)."""
    import numpy as np
    from edgeseg.converters.calibration import load_images

    from edgeseg import runtimes

    say = log or (lambda _m: None)
    cfg = run.config
    costs, index = _model_costs(cfg)
    out = []
    for r in run.rows:
        if r.status != OK or not r.artifact:
            continue
        entry: dict[str, Any] = {"row": f"{r.target}/{r.precision} ({r.runtime}, {r.device})"}
        if costs:
            entry["roofline"] = row_roofline(costs, r.precision, r.p50, run.environment)
        try:
            with runtimes.load(r.artifact, runtime=r.runtime, device=r.device, threads=cfg.get("threads")) as rt:
                x = load_images(cfg.get("data") or "synthetic", 1, rt.manifest.preprocessing, "verification").images
                entry.update(summarize(rt.profile_ops(np.ascontiguousarray(x, dtype=np.float32), RUNS)))
        except NotImplementedError as exc:
            entry["error"] = str(exc)
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            entry["error"] = str(exc).splitlines()[0][:200]
        if "top" in entry and costs:
            op_roofline(entry["top"], costs, index, r.precision, run.environment)
        if "top" in entry:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in list(entry["by_type"].items())[:3])
            say(f"profile {entry['row']}: {shares}")
        out.append(entry)
    return out
