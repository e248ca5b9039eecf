"""``--precision auto``: convert fp32 and int8 for each target, time both on this machine, keep the faster one
that passed its checks, and say plainly when int8 does not pay on this CPU.

int8 speed depends on the CPU's int8 kernels and on the runtime (session 5 measured onnxruntime int8 2.95x
*slower* than its fp32 on a VNNI CPU, OpenVINO 1.18x slower, LiteRT 1.23x faster), so the choice is measured
here, not assumed. Timing: a few warm-up calls, then calls for ``seconds``, median; int8 must be at least
:data:`MIN_GAIN` times faster to be chosen (timing noise on shared cores is a few percent).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MIN_GAIN = 1.05


def time_artifact(path: Any, sample: np.ndarray, threads: int | None, seconds: float = 0.4,
                  warmup: int = 3) -> float:
    """Median milliseconds of one inference of ``sample`` (batch 1) with the artifact's runtime."""
    from edgeseg import runtimes

    with runtimes.load(path, threads=threads) as rt:
        x = np.ascontiguousarray(sample[:1], dtype=np.float32)
        for _ in range(warmup):
            rt.infer(x)
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 5:
            t0 = time.perf_counter()
            rt.infer(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def decide(fp32_ms: float | None, int8_ms: float | None, int8_ok: bool, int8_why: str, isa: str) -> dict[str, Any]:
    """The choice for one target from its two timings (None: that artifact did not pass)."""
    rec: dict[str, Any] = {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "int8_path": isa, "min_gain": MIN_GAIN}
    if fp32_ms is not None and int8_ms is not None:
        rec["int8_over_fp32"] = round(int8_ms / fp32_ms, 3)
    if not int8_ok:
        rec.update(chosen="fp32", reason=f"int8 did not pass ({int8_why})")
    elif fp32_ms is None:
        rec.update(chosen="int8", reason="the fp32 artifact did not pass")
    elif int8_ms is not None and fp32_ms / int8_ms >= MIN_GAIN:
        rec.update(chosen="int8", reason=f"int8 is {fp32_ms / int8_ms:.2f}x faster than fp32 on this CPU "
                                         f"(int8 path {isa}) and within its accuracy budget")
    else:
        rec.update(chosen="fp32", reason=f"int8 does not pay on this CPU (int8 path {isa}): "
                                         f"{int8_ms / fp32_ms:.2f}x the fp32 time")
    return rec


def select(results: Sequence[Any], sample: np.ndarray, threads: int | None,
           log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Time the fp32 and int8 result of each target, record the choice on both (``result.selection`` and the
    manifests' ``extra.selection``), and return it per target."""
    from edgeseg.runtimes.manifest import manifest_path
    from edgeseg.runtimes.sysinfo import int8_path

    say = log or (lambda _m: None)
    isa = int8_path()
    by_target: dict[str, dict[str, Any]] = {}
    for r in results:
        by_target.setdefault(r.artifact.target, {})[r.artifact.precision] = r
    out = {}
    for target, pair in by_target.items():
        fp32, int8 = pair.get("fp32"), pair.get("int8")
        ms = {p: (time_artifact(r.artifact.path, sample, threads) if r.passed else None)
              for p, r in pair.items() if r is not None}
        why = "" if int8 is None else (int8.refused or "; ".join(int8.parity.failures if int8.parity else []))
        rec = decide(ms.get("fp32"), ms.get("int8"), int8 is not None and int8.passed, why or "not converted", isa)
        if fp32 is None and not (int8 is not None and int8.passed):
            rec.update(chosen=None, reason="neither artifact passed")
        say(f"auto: {target} -> {rec['chosen']}: {rec['reason']}")
        for r in (fp32, int8):
            if r is None:
                continue
            r.selection = {**rec, "this": r.artifact.precision}
            if r.artifact.files:  # a refused artifact has no file and no manifest on disk
                r.manifest.extra = {**r.manifest.extra, "selection": r.selection}
                r.manifest.save(manifest_path(r.artifact.path))
        out[target] = rec
    return out
