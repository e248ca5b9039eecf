"""`edgeseg run`: the synthetic recipe end to end, shrunk to seconds; every stage cached by its key; an edit
reruns only what depends on it; an interrupted stage leaves no completed record and is done again."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from edgeseg.common.io import sha256_file  # noqa: E402
from edgeseg.workflow import stages  # noqa: E402
from edgeseg.workflow.recipe import load_recipe  # noqa: E402
from edgeseg.workflow.runner import run_recipe, verdict  # noqa: E402

ALL = ["train", "convert", "quantize", "bench", "report"]
# the shipped synthetic recipe, smaller still: 16 phantoms, one epoch, ONNX only, a few timed inferences; one
# thread each, since torch's OpenMP pool spins in a test process (the CLI sets OMP_WAIT_POLICY=PASSIVE before
# torch loads; pytest has loaded it already) and on a shared machine spinning makes every step many times slower
TINY = {"data": "synthetic:16", "train.val": "synthetic:8", "train.epochs": 1, "train.threads": 1,
        "convert.targets": ["onnx"], "quantize.calib_size": 8, "verify.images": 4, "verify.threads": 1,
        "bench.limit": 4, "bench.iters": 3, "bench.warmup": 1, "bench.threads": 1, "bench.isolate": False}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the stages set their own; the tests after these keep the suite's


def _run(folder, extra=None, **kw):
    lines: list[str] = []
    summary = run_recipe(load_recipe("synthetic", {**TINY, **(extra or {})}), folder, log=lines.append, **kw)
    return summary, lines


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "synthetic"
    summary, lines = _run(folder)
    return folder, summary, lines


def _copy(first, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(first[0], dest)  # records hold paths relative to the folder: a copy is a valid cache
    return dest


def test_the_recipe_runs_end_to_end(first):
    folder, summary, _ = first
    assert [n for n, _ in summary.ran] == ALL and summary.cached == [] and summary.failures == []
    card = summary.card
    ckpt = folder / card["weights"]["file"]
    assert card["weights"]["sha256"] == sha256_file(ckpt)
    arts = {(a["target"], a["precision"]): a for a in card["artifacts"]}
    assert set(arts) == {("onnx", "fp32"), ("onnx", "int8")}
    fp32, int8 = arts["onnx", "fp32"], arts["onnx", "int8"]
    # verified against the FP32 torch model: fp32 to the logits, int8 on the masks
    assert fp32["status"] == "ok" and fp32["verified"]["passed"] and fp32["verified"]["max_abs_diff"] < 1e-3
    assert fp32["verified"]["mask_agreement"] >= 0.99 and fp32["verified"]["n_images"] == 4
    b = int8["budget"]
    assert b["max_dice_drop"] == 0.05 and b["dice_drop"] == pytest.approx(b["dice_fp32"] - b["dice_int8"])
    for a in arts.values():
        manifest = json.loads((folder / a["manifest"]).read_text())
        assert manifest["weights"]["sha256"] == card["weights"]["sha256"]  # made from the trained checkpoint
        assert a["bench"]["status"] == "ok" and a["bench"]["p50_ms"] > 0
    # the benchmark measured the verified files instead of converting its own
    assert summary.records["bench"]["outputs"]["not_reused"] == []
    assert card["reference"]["p50_ms"] > 0 and card["recommended"]["target"] == "onnx"
    html = summary.report.read_text()
    assert '<section id="model-card">' in html and "Latency vs Dice" in html and "ultralightunet-t_int8.onnx" in html
    for stage in ALL:
        rec = json.loads((folder / "stages" / f"{stage}.json").read_text())
        assert rec["status"] == "complete" and len(rec["key"]) == 64
        assert not (folder / "stages" / f"{stage}.started.json").exists()
        assert all(sha256_file(folder / rel) == sha for rel, sha in rec["files"].items())


def test_a_second_run_skips_every_stage(first, tmp_path):
    folder = _copy(first, tmp_path)
    before = {s: (folder / "stages" / f"{s}.json").read_text() for s in ALL}
    summary, lines = _run(folder)
    assert summary.ran == [] and summary.cached == ALL
    assert sum("skipped, cached" in line for line in lines) == 5
    assert {s: (folder / "stages" / f"{s}.json").read_text() for s in ALL} == before
    assert summary.card["artifacts"] == first[1].card["artifacts"]


def test_an_edit_reruns_that_stage_and_what_reads_it(first, tmp_path):
    folder = _copy(first, tmp_path)
    ckpt = (folder / "train" / "best.pt").read_bytes()
    summary, lines = _run(folder, {"quantize.calib_size": 6})
    assert [n for n, _ in summary.ran] == ["quantize", "bench", "report"]
    assert summary.cached == ["train", "convert"]
    assert dict(summary.ran)["quantize"] == "recipe section 'quantize' changed"
    assert (folder / "train" / "best.pt").read_bytes() == ckpt
    int8 = next(a for a in summary.records["quantize"]["outputs"]["artifacts"] if a["precision"] == "int8")
    manifest = json.loads((folder / int8["manifest"]).read_text())
    assert manifest["quantization"]["calibration"]["count"] == 6  # really re-quantized, with the new setting
    # the bench section reaches only the bench and the report
    summary, _ = _run(folder, {"quantize.calib_size": 6, "bench.iters": 4})
    assert [n for n, _ in summary.ran] == ["bench", "report"]
    # a deleted artifact is noticed and made again
    (folder / int8["path"]).unlink()
    summary, _ = _run(folder, {"quantize.calib_size": 6, "bench.iters": 4})
    assert dict(summary.ran)["quantize"] == f"its output {int8['path']} is missing"


def test_an_interrupted_stage_leaves_no_record_and_is_done_again(first, tmp_path, monkeypatch):
    folder = _copy(first, tmp_path)
    import edgeseg.benchmarks.report as report

    real = report.write_reports

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the bench reports")

    monkeypatch.setattr(report, "write_reports", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(folder, {"bench.iters": 2})
    assert not (folder / "stages" / "bench.json").exists()
    assert (folder / "stages" / "bench.started.json").exists()
    monkeypatch.setattr(report, "write_reports", real)
    summary, _ = _run(folder, {"bench.iters": 2})
    assert summary.cached == ["train", "convert", "quantize"]
    assert dict(summary.ran)["bench"] == "interrupted before it completed"
    assert not (folder / "stages" / "bench.started.json").exists()


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    import edgeseg.train.loop as loop

    real = loop.train

    def crash_after_first_epoch(cfg, on_epoch=None):
        def boom(row):
            raise RuntimeError(f"simulated crash after epoch {row['epoch']}")

        return real(cfg, on_epoch=boom)

    monkeypatch.setattr(loop, "train", crash_after_first_epoch)
    with pytest.raises(RuntimeError, match="simulated crash after epoch 1"):
        _run(tmp_path / "r", {"train.epochs": 2})
    assert (tmp_path / "r" / "train" / "last.pt").is_file()
    assert not (tmp_path / "r" / "stages" / "train.json").exists()
    monkeypatch.setattr(loop, "train", real)
    summary, lines = _run(tmp_path / "r", {"train.epochs": 2, "convert.targets": ["onnx"], "quantize.targets": []})
    out = summary.records["train"]["outputs"]
    assert out["resumed"] is True and any("resuming the interrupted training" in line for line in lines)
    history = json.loads((tmp_path / "r" / "train" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 from before the crash, epoch 2 after it


def test_a_missing_backend_is_skipped_and_a_failure_is_tried_again(first, tmp_path, monkeypatch):
    import edgeseg.converters.api as api

    folder = _copy(first, tmp_path)
    hint = "the tflite converter needs litert-torch: pip install 'edgeseg[tflite]' -c constraints.txt"
    real_missing, real_convert = stages.backend_missing, api.convert_model
    monkeypatch.setattr(stages, "backend_missing", lambda t: hint if t == "tflite" else real_missing(t))

    def openvino_breaks(model, target, *args, **kwargs):
        if target == "openvino":
            raise RuntimeError("simulated converter bug")
        return real_convert(model, target, *args, **kwargs)

    monkeypatch.setattr(api, "convert_model", openvino_breaks)
    recipe = {"convert.targets": ["onnx", "openvino", "tflite"], "quantize.targets": ["onnx"]}
    summary, _ = _run(folder, recipe)
    assert summary.cached == ["train", "quantize"]  # quantize's own section did not change
    assert summary.failures == ["openvino fp32: conversion failed (RuntimeError: simulated converter bug)"]
    skipped = {(s["target"], s["precision"]): s["reason"] for s in summary.card["skipped"]}
    assert skipped == {("tflite", "fp32"): hint}
    assert {a["target"] for a in summary.card["artifacts"]} == {"onnx"}
    onnx = folder / summary.records["convert"]["outputs"]["artifacts"][0]["path"]
    made = onnx.stat().st_mtime_ns
    # the next run tries again only what failed, and keeps the verified ONNX file it made
    monkeypatch.setattr(api, "convert_model", real_convert)
    summary, lines = _run(folder, recipe)
    assert dict(summary.ran)["convert"] == "trying again what failed last time: openvino fp32"
    assert any("onnx fp32: kept from the last try" in line for line in lines) and onnx.stat().st_mtime_ns == made
    assert summary.failures == [] and {a["target"] for a in summary.card["artifacts"]} == {"onnx", "openvino"}
    assert _run(folder, recipe)[0].ran == []  # and then everything is cached (tflite is still missing)
    # once the missing backend is installed, the stage is no longer complete
    monkeypatch.setattr(stages, "backend_missing", real_missing)
    assert stages.retry_reason("convert", summary.records["convert"]) == \
        "tflite can be converted now (its backend is installed)"


def test_an_int8_artifact_the_converter_refuses_is_reported_not_benchmarked(first, tmp_path, monkeypatch):
    import edgeseg.converters.api as api

    folder = _copy(first, tmp_path)
    real = api.convert_model
    why = "int8 misses the accuracy budget: best dice drop +0.0301 > 0.02 after 7 trials"

    def refuses_int8(model, target, precision, *args, **kwargs):
        results = real(model, target, precision, *args, **kwargs)
        for res in results:  # what a converter with a budget search returns: nothing kept, and why
            if res.artifact.precision == "int8":
                for f in [*res.artifact.files, res.manifest_path]:
                    f.unlink()
                res.refused = why
        return results

    monkeypatch.setattr(api, "convert_model", refuses_int8)
    summary, _ = _run(folder, {"quantize.calib_size": 7})
    assert [n for n, _ in summary.ran] == ["quantize", "bench", "report"] and summary.failures == []
    int8 = next(a for a in summary.card["artifacts"] if a["precision"] == "int8")
    assert int8["status"] == "over-budget" and int8["kept"] is False and int8["refused"] == why
    assert "bench" not in int8  # not measured: the harness would have converted one of its own
    assert [r["precision"] for r in json.loads((folder / "bench" / "bench.json").read_text())["rows"]] == \
        ["fp32", "fp32"]  # the torch reference and the ONNX fp32 artifact
    assert "not kept onnx int8: int8 misses the accuracy budget" in summary.report.read_text()
    assert verdict(load_recipe("synthetic", {"quantize.over_budget": "fail"}), summary.records) == [f"onnx int8: {why}"]


def test_the_budget_and_the_verdict():
    art = {"parity": {"dice_reference": 0.80, "dice_candidate": 0.72, "n_images": 16}}
    b = stages._budget(art, 0.05)
    assert b["dice_drop"] == pytest.approx(0.08) and b["within"] is False
    assert stages._budget(art, 0.10)["within"] is True and stages._budget(art, None)["within"] is None
    assert stages._budget({"parity": {}}, 0.05)["within"] is None  # no labels: not checked, not passed
    records = {"convert": {"outputs": {"failed": [{"target": "tflite", "precision": "fp32", "reason": "boom"}],
                                       "artifacts": []}},
               "quantize": {"outputs": {"failed": [], "artifacts": [
                   {"target": "onnx", "precision": "int8", "status": "over-budget", "budget": b}]}}}
    report = load_recipe("synthetic")
    assert verdict(report, records) == ["tflite fp32: conversion failed (boom)"]
    strict = load_recipe("synthetic", {"quantize.over_budget": "fail"})
    assert verdict(strict, records)[1] == "onnx int8: Dice drop 0.0800 > budget 0.05"


def test_the_cli_answers_a_bad_recipe_in_one_line(capsys):
    from edgeseg.cli import main

    assert main(["run", "--recipe", "synthetic", "--set", "train.epoch=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeseg: error: synthetic.yaml: train: unknown key 'epoch'") and err.count("\n") == 1
    assert main(["run"]) == 2 and "say which recipe to run" in capsys.readouterr().err
    assert main(["run", "--list"]) == 0 and "synthetic:" in capsys.readouterr().out
