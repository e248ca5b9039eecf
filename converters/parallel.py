"""The targets of one ``convert_model`` call, converted side by side in worker processes (``--jobs``).

A target's conversion is independent of the others' (its own export, calibration, budget search and
verification), and much of it runs on one core: litert-torch's lowering of a TFLite int8 graph is single-
threaded Python (~30-40 s of ultralightunet-s's ~60 s on the 2-core development machine), while ONNX Runtime's
calibration and NNCF's statistics pass use every core. Running the targets in separate processes keeps both
cores busy: ``edgeseg convert --model ultralightunet-s --target onnx,openvino,tflite --precision int8 --calib
kvasir-seg-256`` took 113 s one target after another and 75 s with two workers (1.50x; docs/notes/issue-14.md).
Separate processes, not threads:
torch.export and the converters are not thread-safe, and a native crash in one converter then ends one target,
not the command.

Each worker gets ``cores // jobs`` threads (at least one) and converts its target's precisions in order, the
same way the sequential path does (:func:`edgeseg.converters.staging.convert_one`): fp32 artifacts compute the
same outputs (tests/converters/test_parallel.py; the bytes can differ: the TorchScript exporter numbers value
names per process); int8 calibration statistics summed on fewer threads can differ in
the last bits (TFLite's histogram ranges: mask agreement 0.9886 with one thread, 0.9870 with two), as with
``--threads``. Its progress lines are printed as one block when the target finishes, so that targets do not
interleave. A worker gets one thread per core divided by the workers: giving the slowest target both cores
made the run slower (87 s: the cores were oversubscribed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass
class TargetJob:
    """One target's share of a ``convert_model`` call: its model copy (deploy-time rewrites applied), the
    rewrites' records, and its configs with their file names."""

    target: str
    export_net: Any
    rewrites: list[dict[str, Any]] | None
    configs: list[tuple[Any, str]]  # (ConvertConfig, file name)


def _cores() -> int:
    from edgeseg.runtimes.sysinfo import cpu_info

    return int(cpu_info()["usable_cores"]) or 1


def default_jobs(n_targets: int, net: Any = None) -> int:
    """One worker per target, up to the cores this process may use; one (this process) for a model with a
    module class defined in ``__main__`` (a script's or a notebook's), which a spawned process cannot import."""
    if net is not None and any(type(m).__module__ == "__main__" for m in net.modules()):
        return 1
    return max(1, min(n_targets, _cores()))


def run_job(ctx: Any, job: TargetJob, sample_np: np.ndarray, batch: int | None) -> list[Any]:
    """Convert one target's configs in this process (the sequential path, and each worker's body)."""
    import torch
    from edgeseg.converters.base import get_converter
    from edgeseg.converters.staging import convert_one

    ctx.export_net, ctx.rewrites = job.export_net, job.rewrites
    converter = get_converter(job.target)  # one instance per target: it may reuse work across precisions
    sample = torch.from_numpy(np.repeat(sample_np, int(batch or 1), axis=0))
    results = []
    for cfg, file_name in job.configs:
        ctx.say(f"converting {ctx.model_name} -> {job.target} {cfg.tag} ({cfg.layout}, batch {batch or 'dynamic'}) ...")
        res = convert_one(ctx, converter, sample, cfg, file_name)
        ctx.say(
            f"  {res.artifact.path} ({res.artifact.size_bytes / 1024:.1f} KiB, {res.artifact.convert_time_s:.1f} s)"
            + (f": {res.parity.summary()}" if res.parity else "")
        )
        results.append(res)
    return results


def _worker(ctx: Any, job: TargetJob, sample_np: np.ndarray, batch: int | None, threads: int) -> tuple[Any, ...]:
    """A worker process's entry: (results, log lines, None) or (None, log lines, (exception type, message))."""
    import torch

    torch.set_num_threads(threads)
    lines: list[str] = []
    ctx = replace(ctx, say=lines.append, threads=ctx.threads or threads)
    try:
        return run_job(ctx, job, sample_np, batch), lines, None
    except Exception as exc:  # re-raised in the parent (custom exception types may not pickle)
        if os.environ.get("EDGESEG_DEBUG"):
            import traceback

            lines.append(traceback.format_exc())
        return None, lines, (type(exc).__module__, type(exc).__qualname__, str(exc))


def _reraise(err: tuple[str, str, str]) -> None:
    import builtins
    import importlib

    module, name, message = err
    try:
        cls = getattr(builtins, name) if module == "builtins" else getattr(importlib.import_module(module), name)
        exc = cls(message)
    except Exception:  # a type that cannot be rebuilt from its message
        exc = RuntimeError(f"{module}.{name}: {message}")
    raise exc


def _warm() -> None:
    """A worker's first task: import what every conversion needs (a target's own packages are imported by its
    job: a worker does not know yet which targets it will get)."""
    import edgeseg.converters.staging  # noqa: F401 (torch, numpy, the runtimes' manifest)
    import torch  # noqa: F401


class Workers:
    """``n`` spawned worker processes, started when made: their imports run while the caller loads its data."""

    def __init__(self, n: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.n = int(n)
        self.pool = ProcessPoolExecutor(max_workers=self.n, mp_context=multiprocessing.get_context("spawn"))
        # one task per process, so that each one starts now (saved 3.4 s of 78 s)
        self.started = [self.pool.submit(_warm) for _ in range(self.n)]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def run_jobs(
    ctx: Any, jobs: Sequence[TargetJob], sample_np: np.ndarray, batch: int | None, workers: Workers,
    say: Callable[[str], None],
) -> list[Any]:
    """Convert ``jobs`` (one per target) on ``workers``; the results in the order of ``jobs``.

    The slowest targets start first (their spec's ``convert_cost``), so that the others fill the second core
    while they run. Errors are raised in this process, as the sequential path would raise them."""
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    from edgeseg.converters.base import get_target

    threads = max(1, _cores() // workers.n)
    order = sorted(range(len(jobs)), key=lambda i: -get_target(jobs[i].target).convert_cost)
    say(f"converting {len(jobs)} targets in {workers.n} worker processes, {threads} thread(s) each (--jobs)")
    shipped = replace(ctx, say=None)  # the log callback stays here: a worker returns its lines
    done: dict[int, list[Any]] = {}
    try:
        for fut in workers.started:
            fut.result()
        futures = {workers.pool.submit(_worker, shipped, jobs[i], sample_np, batch, threads): i for i in order}
    except BrokenProcessPool as exc:  # a worker died while starting: it could not import the caller's main
        raise RuntimeError(
            f"the worker processes could not start ({exc}): a spawned process re-imports the caller's main "
            "module, so a script needs `if __name__ == \"__main__\":` and code read from stdin cannot be used; "
            "convert with jobs=1 (--jobs 1)"
        ) from exc
    for fut in as_completed(futures):
        i = futures[fut]
        try:
            results, lines, err = fut.result()
        except BrokenProcessPool as exc:  # the process died (a native crash, or killed for memory)
            raise RuntimeError(f"the worker process converting {jobs[i].target} died ({exc}); run with --jobs 1 "
                               "to convert in this process and see the crash") from exc
        except Exception as exc:  # _worker returns its errors: this one is the model's trip to the worker
            raise RuntimeError(f"the {jobs[i].target} job could not be sent to a worker process "
                               f"({type(exc).__name__}: {exc}); convert with jobs=1 (--jobs 1)") from exc
        for line in lines:
            say(line)
        if err is not None:
            for other in futures:
                other.cancel()
            _reraise(err)
        done[i] = results
    return [r for i in range(len(jobs)) for r in done[i]]
