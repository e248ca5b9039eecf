"""Measure one loaded artifact: load time, first inference, warm latency samples, peak memory, all outputs.

Timing protocol (per row): ``edgeseg.runtimes.load`` is timed as the load time; the first ``infer`` after it is the
first-inference time (it includes lazy initialisation: graph compilation, allocator warm-up); then
``warmup`` more untimed calls; then timed calls, one ``time.perf_counter`` pair around each ``infer`` (the
runtime's own input validation and layout conversion included, as an application would see it), either
``iters`` of them or as many as fit in ``min_time`` seconds (at least ``min_iters``). Timing uses one
fixed input (the first case); outputs for accuracy and fidelity are then computed for every case, batch 1.

Peak memory is the high-water resident set of the process (see :func:`peak_rss_mb`), read right after the timed loop (before the accuracy pass
touches every case). It is per process and never decreases, so it means "this row" only when the row runs in
its own process (the harness default); ``rss_before_load_mb`` is the same figure before loading, so the
runtime's own share is the difference. Torch-free.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process image. ``ru_maxrss`` is not
    used there because the kernel carries it across fork and exec: a worker started by a parent holding
    torch would report the parent's footprint before it has loaded anything. Elsewhere ``ru_maxrss``.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def time_inference(
    infer: Callable[[np.ndarray], Any],
    x: np.ndarray,
    warmup: int = 10,
    iters: int | None = 100,
    min_time: float | None = None,
    min_iters: int = 10,
    max_iters: int = 100_000,
) -> dict[str, Any]:
    """First-inference time and warm per-call latency samples of ``infer(x)``.

    Args:
        infer: the call to time (e.g. ``runtime.infer``).
        x: its input.
        warmup: untimed calls after the first one.
        iters: timed calls (ignored when ``min_time`` is given).
        min_time: time calls until this many seconds have passed (at least ``min_iters`` calls).
        min_iters: lower bound on timed calls in ``min_time`` mode.
        max_iters: upper bound on timed calls in ``min_time`` mode.

    Returns:
        ``{"first_inference_ms", "samples_ms", "output"}`` (the output of the first call).
    """
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {warmup}")
    if min_time is None and (iters is None or iters < 1):
        raise ValueError(f"--iters must be >= 1, got {iters}")
    if min_time is not None and min_time <= 0:
        raise ValueError(f"--min-time must be positive, got {min_time}")
    t0 = time.perf_counter()
    first_out = infer(x)
    first_ms = (time.perf_counter() - t0) * 1000.0
    for _ in range(warmup):
        infer(x)
    samples: list[float] = []
    perf = time.perf_counter
    if min_time is None:
        for _ in range(int(iters)):  # type: ignore[arg-type]
            t = perf()
            infer(x)
            samples.append((perf() - t) * 1000.0)
    else:
        deadline = perf() + float(min_time)
        while len(samples) < max_iters and (len(samples) < min_iters or perf() < deadline):
            t = perf()
            infer(x)
            samples.append((perf() - t) * 1000.0)
    return {"first_inference_ms": first_ms, "samples_ms": samples, "output": first_out}


def run_all(infer: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray) -> np.ndarray:
    """Outputs of every case, batch 1, stacked: (N, C, *spatial) float32."""
    outs = [np.asarray(infer(np.array(inputs[i : i + 1])), dtype=np.float32)[0]
            for i in range(len(inputs))]
    return np.stack(outs)


def measure_runtime(
    load: Callable[[], Any],
    inputs: np.ndarray,
    warmup: int,
    iters: int | None,
    min_time: float | None,
    outputs_path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load, time and run every case of one artifact (the body of a benchmark row).

    Args:
        load: returns a loaded :class:`runtimes.Runtime` (it is timed; exceptions propagate with the stage
            recorded through ``progress``).
        inputs: (N, C, *spatial) float32 cases; the first is the timing input.
        warmup: untimed calls after the first.
        iters: timed calls (None with ``min_time``).
        min_time: seconds of timed calls instead of a count.
        outputs_path: where to save the stacked outputs (``.npy``); None: returned in the dict.
        progress: called with "load", "measure", "outputs" as the stages start.

    Returns:
        Load time, first-inference time, samples, peak RSS (before load and after timing), runtime info,
        and ``outputs`` (array) or ``outputs_path``.
    """
    say = progress or (lambda stage: None)
    rss0 = peak_rss_mb()
    say("load")
    t0 = time.perf_counter()
    rt = load()
    load_ms = (time.perf_counter() - t0) * 1000.0
    try:
        say("measure")
        x = np.array(inputs[:1])  # a writable copy (inputs may be a read-only memory map)
        timing = time_inference(rt.infer, x, warmup=warmup, iters=iters, min_time=min_time)
        peak = peak_rss_mb()
        say("outputs")
        outs = run_all(rt.infer, inputs)
        info = rt.info() if hasattr(rt, "info") else {}
    finally:
        rt.close()
    result: dict[str, Any] = {
        "load_time_ms": load_ms,
        "first_inference_ms": timing["first_inference_ms"],
        "samples_ms": timing["samples_ms"],
        "peak_rss_mb": peak,
        "rss_before_load_mb": rss0,
        "runtime_info": info,
        "int8_warning": getattr(rt, "int8_warning", None),
    }
    if outputs_path is not None:
        np.save(outputs_path, outs)
        result["outputs_path"] = str(outputs_path)
    else:
        result["outputs"] = outs
    return result
