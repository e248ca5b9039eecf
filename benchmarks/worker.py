"""One stage of one benchmark row, runnable in its own process: ``python -m edgeseg.benchmarks.worker STAGE JOB RESULT``.

Stages (their jobs are the dataclasses of :mod:`edgeseg.benchmarks.jobs`):
    convert: convert the model to the row's target/precision (``edgeseg.converters.convert_model``) into a folder;
    tune: search the artifact's fastest runtime settings here and record them in its manifest;
    measure: ``edgeseg.runtimes.load`` the artifact, time it, run every case and save the outputs (``.npy``).

The job and the result are JSON files. The result is rewritten (atomically) as each step starts, so when the
process dies (a segfaulting runtime, the OOM killer, a timeout) the harness still knows where it was and
the row fails with that stage's status instead of taking the whole run down. The same functions run
in-process when isolation is off (``--no-isolate``).

Failures are classified here: a missing package or device is ``unavailable``; any other error in the
convert stage is ``convert-failed``; in the measure stage (load or inference) ``load-failed``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from edgeseg.benchmarks.jobs import ConvertJob, MeasureJob, TuneJob, job_from_json
from edgeseg.benchmarks.results import CONVERT_FAILED, LOAD_FAILED, UNAVAILABLE, one_line


def classify(stage: str, exc: BaseException) -> str:
    """The row status of an exception raised in ``stage``."""
    from edgeseg.runtimes.base import DeviceNotAvailableError

    if isinstance(exc, (ImportError, DeviceNotAvailableError)):
        return UNAVAILABLE
    return CONVERT_FAILED if stage == "convert" else LOAD_FAILED


def error_result(stage: str, exc: BaseException) -> dict[str, Any]:
    msg = one_line(str(exc)) or type(exc).__name__
    return {"ok": False, "stage": stage, "status": classify(stage, exc), "error_type": type(exc).__name__,
            "reason": f"{type(exc).__name__}: {msg}" if stage != "convert" else msg,
            "traceback": traceback.format_exc(limit=8)}


def do_convert(job: ConvertJob, progress=None) -> dict[str, Any]:
    """Convert ``job.model`` with ``job.weights`` into ``job.out_dir`` (``edgeseg.converters.convert_model``)."""
    say = progress or (lambda s: None)
    say("convert")
    try:
        from edgeseg.converters import convert_model, split_options

        flat = {"verify": False, "img_size": job.img_size, "name": job.name, "threads": job.threads,
                **job.options}
        if job.precision == "int8" and job.calib:
            flat.setdefault("calib", job.calib)
            flat.setdefault("calib_size", job.calib_size)
        export, quant, verify = split_options(flat)
        t0 = time.perf_counter()
        results = convert_model(job.model, target=job.target, precision=job.precision, weights=job.weights,
                                export=export, quant=quant, verify=verify, out_dir=job.out_dir)
        res = results[0]
        return {"ok": True, "stage": "convert", "artifact": str(res.artifact.path),
                "convert_time_s": time.perf_counter() - t0, "parity": res.manifest.parity}
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the row's status
        if isinstance(exc, KeyboardInterrupt):
            raise
        return error_result("convert", exc)


def do_tune(job: TuneJob, progress=None) -> dict[str, Any]:
    """Tune ``job.artifact`` for ``job.runtime`` here and record the result in its manifest."""
    say = progress or (lambda s: None)
    say("tune")
    try:
        from edgeseg.runtimes.tuning import TuneOptions, record, tune

        result = tune(job.artifact, runtime=job.runtime, device=job.device, threads=job.threads,
                      options=TuneOptions(budget_s=job.budget_s))
        record(job.artifact, result)
        return {"ok": True, "stage": "tune", **result.to_dict()}
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        return error_result("tune", exc)


def do_measure(job: MeasureJob, progress=None) -> dict[str, Any]:
    """Load ``job.artifact`` with ``job.runtime`` on ``job.device`` and measure it."""
    import numpy as np
    from edgeseg.benchmarks.measure import measure_runtime

    stage = {"now": "load"}

    def say(s: str) -> None:
        stage["now"] = s
        if progress:
            progress(s)

    try:
        from edgeseg import runtimes

        inputs = np.load(job.inputs, mmap_mode="r")

        def load():
            return runtimes.load(job.artifact, runtime=job.runtime, device=job.device, threads=job.threads,
                                 **job.options)

        res = measure_runtime(load, inputs, warmup=job.warmup, iters=job.iters, min_time=job.min_time,
                              outputs_path=job.outputs, progress=say)
        res.update(ok=True, stage="done")
        return res
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        res = error_result(stage["now"], exc)
        if stage["now"] != "load":
            res["reason"] = f"inference failed: {res['reason']}"
        return res


STAGES = {"convert": do_convert, "tune": do_tune, "measure": do_measure}


def _write(path: str, obj: dict[str, Any]) -> None:
    from edgeseg.common.io import atomic_write_json

    atomic_write_json(path, obj)


def die_with_parent(poll_s: float = 0.5) -> None:
    """Exit when the process that started this worker is gone (a SIGKILLed ``edgeseg bench`` must not leave
    its worker converting or measuring on its own)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(137)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in STAGES:
        print(f"usage: python -m edgeseg.benchmarks.worker {{{'|'.join(STAGES)}}} JOB.json RESULT.json",
              file=sys.stderr)
        return 2
    stage, job_path, result_path = argv
    die_with_parent()
    job = job_from_json(stage, Path(job_path).read_text())
    if job.threads:
        # torch and BLAS read these at import; the runtimes take the explicit thread count as well
        os.environ.setdefault("OMP_NUM_THREADS", str(job.threads))

    def progress(s: str) -> None:
        _write(result_path, {"ok": False, "stage": s, "pid": os.getpid()})

    result = STAGES[stage](job, progress)
    _write(result_path, result)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess in the tests
    sys.exit(main())
