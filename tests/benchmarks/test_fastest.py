"""`edgeseg demo --model NAME` runs the fastest verified artifact for this machine, converted once and cached."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

MODEL = "ultralightunet-t"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_converted_once_then_reused_while_intact(cache):
    from edgeseg.benchmarks.fastest import fastest_artifact
    from edgeseg.runtimes import find_manifest

    first = fastest_artifact(MODEL, threads=1, iters=5, root=cache)
    assert not first.reused and set(first.timings_ms) == {"openvino", "onnx"}
    assert first.timings_ms[first.target] == min(first.timings_ms.values())
    m = find_manifest(first.artifact)
    assert m.parity["passed"] and m.weights["source"] == "shipped"
    again = fastest_artifact(MODEL, threads=1, iters=5, root=cache)
    assert again.reused and again.artifact == first.artifact and again.timings_ms == first.timings_ms
    first.artifact.write_bytes(first.artifact.read_bytes()[:-3])  # damaged: converted again, not trusted
    third = fastest_artifact(MODEL, threads=1, iters=5, root=cache)
    assert not third.reused and third.artifact.is_file()


def test_demo_model_runs_the_fast_path_and_torch_only_when_asked(cache):
    env = {"EDGESEG_CACHE": str(cache), "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "edgeseg", "demo", "--model", MODEL, "--source", "synthetic", "--headless",
            "--max-frames", "2", "--threads", "1", "--summary-json"]
    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fastest verified artifact here" in res.stderr
    import json

    summary = json.loads(res.stdout)
    assert summary["info"]["runtime"] in ("openvino", "onnxruntime")
    res = subprocess.run([*args, "--runtime", "torch"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["info"]["runtime"] == "torch"
