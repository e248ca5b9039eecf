"""The benchmark matrix on a tiny model: reference row, reused artifacts, failing rows, isolation, CLI, gates."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgeseg.benchmarks.harness import (  # noqa: E402
    BenchConfig,
    artifact_path,
    expand_matrix,
    parse_list,
    run_benchmark,
)
from edgeseg.benchmarks.history import History  # noqa: E402
from edgeseg.benchmarks.jobs import StageRunner  # noqa: E402
from edgeseg.benchmarks.results import FIDELITY_FAILED, LOAD_FAILED, OK, UNAVAILABLE  # noqa: E402
from edgeseg.runtimes.manifest import Manifest, Preprocessing, TensorSpec  # noqa: E402

from edgeseg.common.io import sha256_file  # noqa: E402
from edgeseg.weights import CHECKPOINT_FORMAT  # noqa: E402

MODEL, IMG = "ultralightunet-t", 64


def _checkpoint(path, seed):
    from edgeseg.models import create_model

    torch.manual_seed(seed)
    net = create_model(MODEL).eval()
    torch.save({"format": CHECKPOINT_FORMAT, "model": MODEL, "state_dict": net.state_dict()}, path)
    return net


def _export_onnx(net, path, sha, precision="fp32"):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, IMG, IMG)
    torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamo=False)
    Manifest(artifact=path.name, target="onnx", precision=precision, model=MODEL,
             inputs=[TensorSpec("input", [1, 3, IMG, IMG])], outputs=[TensorSpec("logits", [1, 1, IMG, IMG])],
             preprocessing=Preprocessing(size=[IMG, IMG]), weights={"sha256": sha}).save(
        path.with_name(path.name + ".json"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, its faithful ONNX export (fp32), an export of OTHER weights posing as fp16, and a
    corrupt file posing as int8, all in the artifact cache where the harness looks for them."""
    root = tmp_path_factory.mktemp("bench")
    ckpt = root / "tiny.pt"
    net = _checkpoint(ckpt, seed=0)
    sha = sha256_file(ckpt)
    cache = root / "cache"
    _export_onnx(net, artifact_path(cache, MODEL, IMG, sha, "onnx", "fp32"), sha)
    other = _checkpoint(root / "other.pt", seed=1)
    _export_onnx(other, artifact_path(cache, MODEL, IMG, sha, "onnx", "fp16"), sha, "fp16")
    bad = artifact_path(cache, MODEL, IMG, sha, "onnx", "int8")
    bad.write_bytes(b"this is not an onnx model" * 10)
    bad.with_name(bad.name + ".json").write_text(
        artifact_path(cache, MODEL, IMG, sha, "onnx", "fp32").with_name(f"{MODEL}_fp32.onnx.json").read_text()
        .replace(f"{MODEL}_fp32.onnx", bad.name))
    return {"root": root, "ckpt": ckpt, "cache": cache, "net": net}


def _cfg(setup, tmp_path, **kw):
    base = dict(model=MODEL, weights=str(setup["ckpt"]), targets="onnx", precisions="fp32", devices="cpu",
                data="synthetic:4", img_size=IMG, threads=1, warmup=1, iters=3, out=str(tmp_path / "out"),
                artifacts=str(setup["cache"]), isolate=False)
    base.update(kw)
    return BenchConfig(**base)


def test_matrix_expansion_and_list_parsing():
    specs = expand_matrix(["onnx", "tflite"], ["fp32", "int8"], ["cpu"])
    assert specs[0].is_reference and len(specs) == 5
    assert {(s.target, s.runtime) for s in specs[1:]} == {("onnx", "onnxruntime"), ("tflite", "litert")}
    both = expand_matrix(["onnx"], ["fp32"], ["cpu", "gpu"], runtimes=["onnxruntime", "openvino"])
    assert [(s.runtime, s.device) for s in both[1:]] == [("onnxruntime", "cpu"), ("onnxruntime", "gpu"),
                                                         ("openvino", "cpu"), ("openvino", "gpu")]
    assert parse_list("all", ("a", "b"), "x") == ["a", "b"]
    assert parse_list("b,a,b", ("a", "b"), "x") == ["a", "b"]
    with pytest.raises(ValueError, match="unknown target"):
        parse_list("onnx,tensorrt", ("onnx", "openvino"), "target")


def test_matrix_rows_and_statuses(setup, tmp_path):
    run = run_benchmark(_cfg(setup, tmp_path, precisions="fp32,fp16,int8", devices="cpu,gpu"), log=lambda m: None)
    rows = {(r.target, r.precision, r.device): r for r in run.rows}
    ref = rows[("torch", "fp32", "cpu")]
    assert ref.status == OK and ref.reference and ref.speedup == pytest.approx(1.0)
    assert ref.latency_ms["n"] == 3 and ref.size_bytes == setup["ckpt"].stat().st_size
    # the faithful export reproduces the reference on every case
    good = rows[("onnx", "fp32", "cpu")]
    assert good.status == OK and good.reused is True
    assert good.agreement == pytest.approx(1.0, abs=1e-3) and good.max_abs_diff < 1e-3
    assert good.dice == pytest.approx(ref.dice, abs=1e-3)
    assert len(good.dice_per_case) == 4 and good.latency_ms["p50"] > 0 and good.fps > 0
    # other weights posing as the fp16 artifact: it runs, but it is not the same model
    wrong = rows[("onnx", "fp16", "cpu")]
    assert wrong.status == FIDELITY_FAILED and wrong.agreement < 0.98 and "agreement" in wrong.reason
    # a corrupt file fails to load, and the rows after it still ran
    corrupt = rows[("onnx", "int8", "cpu")]
    assert corrupt.status == LOAD_FAILED and corrupt.reason and corrupt.latency_ms is None
    # onnxruntime has no GPU here: unavailable, not failed
    for p in ("fp32", "fp16", "int8"):
        assert rows[("onnx", p, "gpu")].status == UNAVAILABLE and "gpu" in rows[("onnx", p, "gpu")].reason
    assert run.config["cases"] == 4 and run.config["weights_sha256"] == sha256_file(setup["ckpt"])
    assert run.config["compute_floor_ms"] > 0 and run.environment["threads"] == 1


def test_isolated_rows_survive_a_crashing_worker(setup, tmp_path, monkeypatch):
    # A stand-in worker that records its stage and then dies by SIGSEGV, as a broken runtime would.
    crash = tmp_path / "crash.py"
    crash.write_text("import json, os, signal, sys\n"
                     "json.dump({'ok': False, 'stage': 'measure'}, open(sys.argv[3], 'w'))\n"
                     "os.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(StageRunner, "command", [sys.executable, str(crash)])
    run = run_benchmark(_cfg(setup, tmp_path, isolate=True), log=lambda m: None)
    assert [r.status for r in run.rows] == [LOAD_FAILED, LOAD_FAILED]
    assert all("signal 11" in r.reason and "during measure" in r.reason for r in run.rows)


@pytest.mark.slow
def test_isolated_worker_measures_in_its_own_process(setup, tmp_path):
    run = run_benchmark(_cfg(setup, tmp_path, isolate=True), log=lambda m: None)
    ref, onnx = run.rows
    assert ref.status == OK and onnx.status == OK and onnx.agreement == pytest.approx(1.0, abs=1e-3)
    # the worker's own high-water mark, not the parent's (which holds torch and the data)
    assert onnx.rss_before_load_mb < ref.peak_rss_mb and onnx.peak_rss_mb >= onnx.rss_before_load_mb


def test_cli_run_json_db_history_compare_and_gates(setup, tmp_path, capsys):
    from edgeseg.cli import main

    db = tmp_path / "h.sqlite"
    common = ["bench", "--model", MODEL, "--weights", str(setup["ckpt"]), "--targets", "onnx", "--data",
              "synthetic:4", "--img-size", str(IMG), "--threads", "1", "--warmup", "1", "--iters", "3",
              "--no-isolate", "--artifacts", str(setup["cache"]), "--db", str(db), "--no-html"]
    code = main([*common, "--precisions", "fp32", "--out", str(tmp_path / "a"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"run_id", "environment", "rows"} <= set(out) and out["rows"][0]["target"] == "torch"
    row = out["rows"][1]
    assert {"target", "precision", "runtime", "device", "status", "latency_ms", "fps", "dice", "iou",
            "agreement", "max_abs_diff", "size_bytes"} <= set(row)
    assert set(row["latency_ms"]) >= {"p50", "p90", "p99", "mean", "std"}
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"bench.json", "bench.csv", "bench.md"}
    # a fidelity gate: the wrong-weights "fp16" artifact is far from the reference -> exit code 3
    code = main([*common, "--precisions", "fp32,fp16", "--out", str(tmp_path / "b"), "--min-agreement", "0.99"])
    captured = capsys.readouterr()
    assert code == 3 and "gate agreement failed: onnx/fp16" in captured.err
    runs = History(db).runs()
    assert len(runs) == 2
    assert main(["bench", "history", "--db", str(db), "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [r["run_id"] for r in runs]
    assert main(["bench", "compare", runs[1]["run_id"], "latest", "--db", str(db), "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert len(cmp["rows"]) == 2 and cmp["only_b"] == ["onnx/fp16 (onnxruntime, cpu)"]
    assert main(["bench", "show", "latest", "--db", str(db), "--json", "--out", str(tmp_path / "again"),
                 "--no-html"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == runs[0]["run_id"] and (tmp_path / "again" / "bench.md").is_file()
    assert main(["bench", "compare", "latest", "--db", str(db)]) == 2  # needs two runs: one-line error
    assert "compare takes two runs" in capsys.readouterr().err
    assert main(["bench", "histroy", "--db", str(db)]) == 2
    assert "Did you mean 'history'" in capsys.readouterr().err
    assert main(["bench", "--targets", "onnx"]) == 2
    assert "--model" in capsys.readouterr().err


def test_suites_parse_and_validate(tmp_path):
    from edgeseg.benchmarks.suite import list_suites, load_suite

    assert {"kvasir-polyp", "synthetic-smoke"} <= set(list_suites())
    smoke = load_suite("synthetic-smoke")
    cfg = BenchConfig(model=smoke["model"], targets=smoke["targets"], precisions=smoke["precisions"],
                      data=smoke["data"])
    cfg.validate()
    assert cfg.targets == ["onnx", "openvino", "tflite"] and cfg.precisions == ["fp32", "fp16", "int8"]
    kv = load_suite("kvasir-polyp")
    assert kv["data"].endswith("kvasir-seg-256") and kv["gates"]["max_dice_drop"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: ultralightunet-s\ntarget: [onnx]\n")
    with pytest.raises(ValueError, match="did you mean 'targets'"):
        load_suite(bad)
    with pytest.raises(FileNotFoundError, match="Did you mean 'kvasir-polyp'"):
        load_suite("kvasir-polip")


def test_torch_free_parts_import_without_torch():
    import subprocess

    code = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
            "  if n == 'torch' or n.startswith('torch.'): raise ModuleNotFoundError(n)\n"
            "sys.meta_path.insert(0, B())\n"
            "import edgeseg.benchmarks.stats, edgeseg.benchmarks.results, edgeseg.benchmarks.history, edgeseg.benchmarks.compare, "
            "edgeseg.benchmarks.report, edgeseg.benchmarks.measure, edgeseg.benchmarks.worker, edgeseg.benchmarks.suite, edgeseg.benchmarks.environment\n"
            "assert 'torch' not in sys.modules\nprint('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "ok", res.stderr
    assert np is not None


def test_converts_when_not_cached_then_reuses(setup, tmp_path):
    pytest.importorskip("onnx")
    cfg = _cfg(setup, tmp_path, artifacts=str(tmp_path / "fresh"))
    first = run_benchmark(cfg, log=lambda m: None).rows[1]
    assert first.status == OK and first.reused is False and first.convert_time_s > 0
    assert first.agreement == pytest.approx(1.0, abs=1e-3) and first.max_abs_diff < 1e-3
    again = run_benchmark(_cfg(setup, tmp_path, artifacts=str(tmp_path / "fresh")), log=lambda m: None).rows[1]
    assert again.reused is True and again.artifact == first.artifact and again.size_bytes == first.size_bytes


@pytest.mark.slow
def test_full_matrix_every_target_and_precision(setup, tmp_path):
    """The acceptance run in miniature: every target x precision, isolated, converting from scratch."""
    cfg = _cfg(setup, tmp_path, targets="all", precisions="all", artifacts=str(tmp_path / "all"), isolate=True,
               calibration=4, threads=2)
    run = run_benchmark(cfg, log=lambda m: None)
    assert len(run.rows) == 10
    by = {(r.target, r.precision): r for r in run.rows}
    for (target, precision), r in by.items():
        assert r.status in (OK, FIDELITY_FAILED), (target, precision, r.reason)
        assert r.latency_ms["p50"] > 0 and r.size_bytes > 0 and r.peak_rss_mb > 0
        if precision == "fp32":
            assert r.max_abs_diff < 1e-3, (target, r.max_abs_diff)


def test_random_weights_are_saved_reproducibly(tmp_path, monkeypatch):
    from edgeseg.benchmarks.harness import resolve_weights

    import edgeseg.weights

    monkeypatch.setattr(edgeseg.weights, "shipped_weights", lambda name: None)  # as for a model without any

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pa, sha_a, label = resolve_weights(MODEL, None, tmp_path / "a")
    pb, sha_b, _ = resolve_weights(MODEL, None, tmp_path / "b")
    assert label == "random (seed 0)" and pa != pb
    assert sha_a == sha_b  # same bytes in every run, so the artifact cache keyed by it is reused
    with pytest.raises(FileNotFoundError, match="--weights"):
        resolve_weights(MODEL, str(tmp_path / "missing.pt"), tmp_path)


def test_busy_wait_choice_reaches_the_runtimes():
    from edgeseg.benchmarks.harness import runtime_options

    cfg = BenchConfig(model=MODEL, runtime_options={"openvino": {"hint": "LATENCY"}})
    assert runtime_options(cfg, "onnxruntime") == {"session_config": {"session.intra_op.allow_spinning": "0"}}
    assert runtime_options(cfg, "openvino") == {"hint": "LATENCY"}
    cfg = BenchConfig(model=MODEL, busy_wait="on",
                      runtime_options={"onnxruntime": {"session_config": {"session.intra_op.allow_spinning": "0"}}})
    assert runtime_options(cfg, "onnxruntime")["session_config"]["session.intra_op.allow_spinning"] == "0"  # explicit wins
    assert runtime_options(BenchConfig(model=MODEL, busy_wait="default"), "onnxruntime") == {}
    assert StageRunner(None, True, 1.0, 2, "off").omp_wait_policy == "PASSIVE"
    with pytest.raises(ValueError, match="--busy-wait"):
        BenchConfig(model=MODEL, busy_wait="maybe").validate()


def test_checkpoint_preprocessing_sets_normalisation_and_default_size(setup, tmp_path):
    from edgeseg.benchmarks.harness import checkpoint_preprocessing

    from edgeseg.models import get_model_cfg

    mcfg = get_model_cfg(MODEL)
    assert checkpoint_preprocessing(setup["ckpt"], mcfg) == (list(mcfg.mean), list(mcfg.std), None)
    ckpt = torch.load(setup["ckpt"], weights_only=False)
    ckpt["preprocessing"] = {"size": [160, 160], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    torch.save(ckpt, tmp_path / "pre.pt")
    assert checkpoint_preprocessing(tmp_path / "pre.pt", mcfg) == ([0.5] * 3, [0.25] * 3, 160)


def test_tune_records_settings_and_rows_say_what_they_ran_with(setup, tmp_path):
    import shutil

    from edgeseg.runtimes.manifest import find_manifest
    from edgeseg.runtimes.tuning import _this_machine

    cache = tmp_path / "cache"
    shutil.copytree(setup["cache"], cache)  # tuning writes into the manifests: not into the shared cache
    run = run_benchmark(_cfg(setup, tmp_path, artifacts=str(cache), tune=True), log=lambda m: None)
    ref, onnx = run.rows
    assert onnx.status == OK and run.config["tune"] is True
    entry = find_manifest(onnx.artifact).extra["tuned"][_this_machine()]["onnxruntime/cpu"]
    assert entry["settings"]["threads"] == 1  # held at the bench's --threads, not searched
    # the bench's explicit choices (threads, no spinning) win; the rest of the record is applied and reported
    tuned = onnx.runtime_info["tuned"]
    assert "threads" not in tuned and "session_config" not in tuned
    assert tuned["optimization"] == entry["settings"]["optimization"]
    assert "tuned" not in ref.runtime_info
