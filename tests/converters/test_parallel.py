"""Targets converted side by side in worker processes (``jobs``) give the files one after another gives, and a
worker's error reaches the caller as the error it was."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def _convert(out, jobs, lines):
    from edgeseg.converters import ExportOptions, VerifyOptions, convert_model

    from edgeseg.models import create_model

    torch.manual_seed(0)
    net = create_model("ultralightunet-t").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_model(net, ["onnx", "openvino"], "fp32", export=ExportOptions(img_size=64),
                             verify=VerifyOptions(images=4, threads=1), out_dir=out, log=lines.append, jobs=jobs)


def test_two_workers_make_the_artifacts_one_process_makes(tmp_path):
    import numpy as np

    from edgeseg import runtimes

    serial, parallel = [], []
    one = _convert(tmp_path / "one", 1, serial)
    two = _convert(tmp_path / "two", 2, parallel)
    assert [r.artifact.target for r in two] == ["onnx", "openvino"]  # the order asked for, whatever finished first
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    for a, b in zip(one, two):
        assert a.passed and b.passed and a.artifact.path.parent != b.artifact.path.parent
        assert a.parity.figures["mask_agreement"] == b.parity.figures["mask_agreement"]
        # the same graph (the TorchScript exporter numbers its value names per process, so the bytes may differ)
        with runtimes.load(a.artifact.path, threads=1) as ra, runtimes.load(b.artifact.path, threads=1) as rb:
            np.testing.assert_allclose(ra.infer(x), rb.infer(x), rtol=0, atol=1e-6)
    assert any("2 worker processes" in line for line in parallel)
    assert not any("worker processes" in line for line in serial)
    # each target's progress arrives as one block: its "converting" line directly before its result line
    for target in ("onnx", "openvino"):
        at = next(i for i, line in enumerate(parallel) if line.startswith(f"converting ultralightunet-t -> {target}"))
        assert target in parallel[at] and parallel[at + 1].strip().startswith(str(tmp_path / "two"))


def test_an_error_in_a_worker_is_raised_as_what_it_was(tmp_path):
    from edgeseg.converters.parallel import TargetJob, _reraise, _worker
    from edgeseg.converters.staging import Context

    ctx = Context(net=None, out=tmp_path, model_name="m", model_cfg={}, pre=None, classes=1, wrec={},
                  held_back=None, threads=1, say=None)
    job = TargetJob(target="no-such-target", export_net=None, rewrites=None, configs=[])
    results, lines, err = _worker(ctx, job, None, 1, 1)
    assert results is None and err[1] == "ValueError" and "no-such-target" in err[2]
    with pytest.raises(ValueError, match="no-such-target"):
        _reraise(err)
    with pytest.raises(RuntimeError, match="BudgetNotMetError: missed"):  # needs more than a message to build
        _reraise(("edgeseg.converters.budget", "BudgetNotMetError", "missed"))


class _KillsItsReader:
    """Unpickled in the worker as ``os._exit(3)``: a worker that dies the way a native crash ends it."""

    def __reduce__(self):
        import os

        return os._exit, (3,)


def test_a_worker_that_dies_is_reported_with_what_to_do(tmp_path):
    import numpy as np
    from edgeseg.converters.parallel import TargetJob, Workers, run_jobs
    from edgeseg.converters.staging import Context

    ctx = Context(net=None, out=tmp_path, model_name="m", model_cfg={}, pre=None, classes=1, wrec={},
                  held_back=None, threads=1, say=None)
    pool = Workers(1)
    try:
        with pytest.raises(RuntimeError, match="worker process converting onnx died.*--jobs 1"):
            run_jobs(ctx, [TargetJob("onnx", _KillsItsReader(), None, [])], np.zeros((1, 3, 8, 8), np.float32),
                     1, pool, lambda _m: None)
    finally:
        pool.close()


def test_a_model_class_from_main_converts_in_this_process():
    import types

    from edgeseg.converters.parallel import default_jobs

    main_cls = types.new_class("NotebookNet", (torch.nn.Module,))
    main_cls.__module__ = "__main__"  # what a class defined in a notebook or a script looks like
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1))
    assert default_jobs(2, net) == min(2, default_jobs(2))
    net.add_module("custom", main_cls())
    assert default_jobs(2, net) == 1


def test_workers_that_cannot_start_say_why(tmp_path):
    """Code piped to ``python -`` cannot be re-imported by a spawned worker: the pool breaks while starting,
    and the caller is told what to change instead of getting BrokenProcessPool."""
    import subprocess
    import sys

    code = (
        "from edgeseg.converters.parallel import Workers, run_jobs\n"
        "from edgeseg.converters.staging import Context\n"
        f"ctx = Context(net=None, out={str(tmp_path)!r}, model_name='m', model_cfg={{}}, pre=None, classes=1, "
        "wrec={}, held_back=None, threads=1, say=None)\n"
        "pool = Workers(1)\n"
        "try:\n"
        "    run_jobs(ctx, [], None, 1, pool, print)\n"
        "finally:\n"
        "    pool.close()\n"
    )
    proc = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "could not start" in proc.stderr and 'if __name__ == "__main__":' in proc.stderr, proc.stderr[-2000:]
