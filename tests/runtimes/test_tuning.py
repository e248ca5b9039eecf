"""runtimes.tuning: the search picks what is faster, never what changes results, and its record is applied
by ``runtimes.load`` on this machine only, under the caller's explicit settings."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from edgeseg.runtimes import tuning
from edgeseg.runtimes.manifest import manifest_path
from edgeseg.runtimes.tuning import Knob, TuneOptions, merge_settings, record, tune

from edgeseg import runtimes
from tests.runtimes.test_backends import export_onnx, reference_model

QUICK = TuneOptions(rounds=3, calls=2, warmup=1, budget_s=30)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return export_onnx(reference_model(), tmp_path_factory.mktemp("tune") / "t.onnx")


@pytest.fixture
def fake_knobs(monkeypatch):
    """Two knobs on the onnxruntime backend: ``slow`` (default on) sleeps 5 ms per call, ``wrong`` changes
    the output. The tuner must turn ``slow`` off and never turn ``wrong`` on."""
    from edgeseg.runtimes.ort_runtime import OnnxRuntime

    real = OnnxRuntime._infer_impl

    def infer(self, x):
        if self.options.get("slow"):
            time.sleep(0.005)
        y = real(self, x)
        return y + 1.0 if self.options.get("wrong") else y

    monkeypatch.setattr(OnnxRuntime, "_infer_impl", infer)
    monkeypatch.setattr(OnnxRuntime, "tuning_space", classmethod(
        lambda cls, device: [Knob("slow", "slow", (True, False)), Knob("wrong", "wrong", (False, True))]))
    monkeypatch.setattr(tuning, "thread_counts", lambda cores=None: (1,))


def test_tune_keeps_what_is_faster_and_rejects_what_changes_results(artifact, fake_knobs):
    r = tune(artifact, options=QUICK)
    assert r.runtime == "onnxruntime" and r.settings == {"threads": 1, "slow": False, "wrong": False}
    assert r.default_p50_ms > r.p50_ms + 4.0 and r.speedup > 1.5  # 5 ms of sleep, measured in one run
    wrong = [t for t in r.trials if t.get("knob") == "wrong" and t["settings"]["wrong"]]
    assert len(wrong) == 1 and wrong[0]["status"].startswith("rejected: changes the output")
    assert wrong[0]["p50_ms"] is None


def test_the_record_applies_on_this_machine_under_explicit_settings(artifact, tmp_path, monkeypatch):
    art = tmp_path / artifact.name
    art.write_bytes(artifact.read_bytes())
    manifest_path(art).write_text(manifest_path(artifact).read_text())
    r = tuning.TuneResult(runtime="onnxruntime", device="cpu", machine=tuning._this_machine(),
                          settings={"threads": 1, "optimization": "extended",
                                    "session_config": {"session.intra_op.allow_spinning": "0"}},
                          p50_ms=1.0, default_p50_ms=1.2)
    record(art, r)
    entry = json.loads(manifest_path(art).read_text())["extra"]["tuned"][tuning._this_machine()]
    assert entry["onnxruntime/cpu"]["settings"] == r.settings and entry["onnxruntime/cpu"]["speedup"] == 1.2
    with runtimes.load(art) as rt:  # the manifest's file hashes still hold: only the manifest changed
        assert rt.threads == 1 and rt.tuned == r.settings and rt.info()["tuned"] == r.settings
        assert rt.options["optimization"] == "extended"
    with runtimes.load(art, threads=2, optimization="all") as rt:  # explicit settings win
        assert rt.threads == 2 and rt.options["optimization"] == "all"
        assert rt.tuned == {"session_config": {"session.intra_op.allow_spinning": "0"}}
    with runtimes.load(art, tuned=False) as rt:
        assert rt.tuned == {} and rt.threads is None
    with runtimes.load(art, runtime="openvino") as rt:  # tuned for onnxruntime, not for OpenVINO
        assert rt.tuned == {}
    monkeypatch.setattr(tuning, "_this_machine", lambda: "another CPU | 16 cores | avx2")
    with runtimes.load(art) as rt:
        assert rt.tuned == {} and rt.threads is None


def test_merge_keeps_the_callers_entries_inside_dict_options():
    tuned = {"threads": 4, "hint": "LATENCY", "config": {"ENABLE_CPU_PINNING": False, "A": 1}}
    threads, opts, applied = merge_settings(tuned, None, {"config": {"A": 2}})
    assert threads == 4 and opts == {"hint": "LATENCY", "config": {"ENABLE_CPU_PINNING": False, "A": 2}}
    assert applied == {"threads": 4, "hint": "LATENCY", "config": {"ENABLE_CPU_PINNING": False}}
    assert merge_settings({}, 3, {"x": 1}) == (3, {"x": 1}, {})


def test_options_are_checked():
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        TuneOptions(rounds=0)
    with pytest.raises(ValueError, match="min_gain"):
        TuneOptions(min_gain=1.5)


def test_cli_reports_and_writes_only_when_asked(artifact, tmp_path, capsys):
    from edgeseg.cli import main

    art = tmp_path / artifact.name
    art.write_bytes(artifact.read_bytes())
    manifest_path(art).write_text(manifest_path(artifact).read_text())
    before = manifest_path(art).read_bytes()
    assert main(["tune", str(art), "--rounds", "2", "--budget-s", "5", "--no-write", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["runtime"] == "onnxruntime" and out[0]["settings"]["threads"] >= 1
    assert all(t["status"] == "ok" or t["status"].startswith(("not kept", "skipped")) for t in out[0]["trials"])
    assert manifest_path(art).read_bytes() == before
    assert main(["tune", str(art), "--rounds", "2", "--budget-s", "5"]) == 0
    assert "chosen:" in capsys.readouterr().out
    saved = json.loads(manifest_path(art).read_text())["extra"]["tuned"]
    assert list(saved) == [tuning._this_machine()] and "onnxruntime/cpu" in saved[tuning._this_machine()]
    with runtimes.load(art) as rt:
        assert rt.tuned == saved[tuning._this_machine()]["onnxruntime/cpu"]["settings"]
        assert np.isfinite(rt.infer(np.zeros((1, 3, 64, 64), np.float32))).all()


def test_missing_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="artifact not found"):
        tune(tmp_path / "none.onnx")
