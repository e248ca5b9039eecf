"""The jobs the harness hands to its worker stages (``edgeseg.benchmarks.worker``), typed once for both sides,
and :class:`StageRunner`, which runs one in its own process.

A job crosses a process boundary as JSON (``to_json`` / :func:`job_from_json`); unknown or missing fields are
refused there, so a harness and a worker that disagree fail loudly instead of running with a default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeseg.benchmarks.results import LOAD_FAILED


@dataclass
class ConvertJob:
    """Convert one row's artifact into ``out_dir`` (the converter's own verification is off: the bench
    measures fidelity itself, on more cases).

    Attributes:
        options: any other ``convert_model`` option by its flat name (``quantizer``, ``calib_method``,
            ``verify``...; see ``edgeseg.converters.options.FLAT_NAMES``).
    """

    model: str
    weights: str
    target: str
    precision: str
    out_dir: str
    img_size: int
    name: str | None = None
    calib: str | None = None
    calib_size: int = 32
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TuneJob:
    """Search the fastest runtime settings of one artifact on this machine and record them in its manifest
    (``edgeseg.runtimes.tuning``), the thread count held at the bench's."""

    artifact: str
    runtime: str
    device: str = "cpu"
    threads: int | None = None
    budget_s: float = 30.0


@dataclass
class MeasureJob:
    """Load one artifact, time it on the first case, run every case and save the outputs (``.npy``).

    Attributes:
        iters: timed calls (None when ``min_time`` gives seconds instead).
    """

    artifact: str
    runtime: str
    device: str
    inputs: str
    outputs: str
    warmup: int
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    iters: int | None = 50
    min_time: float | None = None


JOBS: dict[str, type] = {"convert": ConvertJob, "tune": TuneJob, "measure": MeasureJob}


def to_json(job: ConvertJob | TuneJob | MeasureJob) -> str:
    return json.dumps(asdict(job), default=str)


def job_from_json(stage: str, text: str) -> ConvertJob | TuneJob | MeasureJob:
    """The job of ``stage`` from its JSON.

    Raises:
        ValueError: an unknown stage, or fields that are not the job's.
    """
    if stage not in JOBS:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(JOBS)}")
    cls = JOBS[stage]
    data = json.loads(text)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{stage} job: unknown field(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"{stage} job: {exc}") from None


class StageRunner:
    """Run one worker stage in a subprocess (or in-process with ``isolate=False``) and return its result
    dict. A crash, a kill or a timeout becomes a failed result that says where it happened."""

    command = [sys.executable, "-m", "edgeseg.benchmarks.worker"]  # tests swap in a crashing stand-in

    def __init__(self, work: Path, isolate: bool, timeout: float, threads: int | None,
                 busy_wait: str = "default"):
        self.work, self.isolate, self.timeout, self.threads = work, isolate, timeout, threads
        self.omp_wait_policy = {"off": "PASSIVE", "on": "ACTIVE"}.get(busy_wait)
        self.n = 0

    def __call__(self, stage: str, job: ConvertJob | TuneJob | MeasureJob) -> dict[str, Any]:
        from edgeseg.benchmarks import worker

        if not self.isolate:
            return worker.STAGES[stage](job)
        self.n += 1
        job_path = self.work / f"job-{self.n:03d}-{stage}.json"
        res_path = self.work / f"job-{self.n:03d}-{stage}.result.json"
        job_path.write_text(to_json(job))
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        if self.omp_wait_policy:
            env["OMP_WAIT_POLICY"] = self.omp_wait_policy
        cmd = [*self.command, stage, str(job_path), str(res_path)]
        log_path = self.work / f"job-{self.n:03d}-{stage}.log"
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=self.timeout)
                code: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        res = json.loads(res_path.read_text()) if res_path.is_file() else {"ok": False, "stage": stage}
        if res.get("ok") or "status" in res:
            return res
        where = res.get("stage", stage)
        if code is None:
            why = f"timed out after {self.timeout:g} s during {where}"
        elif code < 0:
            why = f"process killed by signal {-code} during {where} (see {log_path.name})"
        else:
            why = f"process exited with code {code} during {where} (see {log_path.name})"
        status = "convert-failed" if where == "convert" else LOAD_FAILED
        return {"ok": False, "stage": where, "status": status, "reason": why}
