"""Benchmark statistics, row status logic, gates, history database and reports, on tiny fake rows."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3

import numpy as np
import pytest
from edgeseg.benchmarks import environment as envmod
from edgeseg.benchmarks.compare import check_gates, compare_runs
from edgeseg.benchmarks.history import History, comparison_key, default_db_path
from edgeseg.benchmarks.report import to_csv, to_markdown, write_reports
from edgeseg.benchmarks.results import (
    CONVERT_FAILED,
    FIDELITY_FAILED,
    LOAD_FAILED,
    OK,
    UNAVAILABLE,
    Row,
    RunResult,
    finalize_rows,
    json_safe,
    judge_fidelity,
    one_line,
)
from edgeseg.benchmarks.stats import (
    PSNR_CAP_DB,
    accuracy,
    fidelity,
    fps,
    latency_stats,
    masks_from_logits,
    pareto_front,
    psnr,
)

# ---------------------------------------------------------------- statistics


def test_latency_stats_match_hand_computed_values():
    s = latency_stats(list(range(1, 101)))  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(math.sqrt((100**2 - 1) / 12))  # population std of 1..n
    assert (s["min"], s["max"], s["n"]) == (1.0, 100.0, 100)
    assert latency_stats([7.0])["p99"] == 7.0
    assert fps(20.0) == pytest.approx(50.0) and fps(20.0, batch=4) == pytest.approx(200.0)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [-1.0]])
def test_latency_stats_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        latency_stats(bad)


def test_psnr_of_probability_maps():
    a = np.zeros((2, 1, 8, 8))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)  # MSE 0.01 at peak 1 -> 20 dB
    assert psnr(a, a + 0.01) == pytest.approx(40.0)
    assert psnr(a, a) == PSNR_CAP_DB
    with pytest.raises(ValueError, match="shape"):
        psnr(a, np.zeros((2, 1, 4, 4)))


def test_masks_from_logits_threshold_in_logit_space():
    logits = np.array([[[[-1.0, 0.0, 0.5, 2.0]]]], dtype=np.float32)  # (1, 1, 1, 4)
    assert masks_from_logits(logits).tolist() == [[[False, False, True, True]]]
    # sigmoid(0.5) = 0.622 and sigmoid(2) = 0.881: a 0.7 threshold keeps only the last pixel
    assert masks_from_logits(logits, threshold=0.7).tolist() == [[[False, False, False, True]]]
    two = np.stack([np.zeros((1, 4)), np.array([[1.0, -1.0, 1.0, -1.0]])])[None]  # (1, 2, 1, 4)
    assert masks_from_logits(two, "softmax").tolist() == [[[True, False, True, False]]]
    with pytest.raises(ValueError, match="threshold"):
        masks_from_logits(logits, threshold=1.0)


def test_accuracy_is_mean_of_per_case_figures():
    t = np.zeros((2, 4, 4), bool)
    t[0, :2] = True  # 8 pixels
    p = np.zeros_like(t)
    p[0, :1] = True  # 4 of the 8 -> Dice 2*4/(4+8) = 2/3, IoU 0.5, recall 0.5, precision 1
    # case 1: both empty -> 1.0 everywhere
    acc = accuracy(p, t)
    assert acc["dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert acc["iou"] == pytest.approx(0.75)
    assert acc["recall"] == pytest.approx(0.75)
    assert acc["seg_precision"] == pytest.approx(1.0)
    assert acc["dice_per_case"] == pytest.approx([2 / 3, 1.0])
    with pytest.raises(ValueError):
        accuracy(p[:1], t)


def test_fidelity_against_reference():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3, 1, 16, 16)).astype(np.float32) * 4
    same = fidelity(ref, ref)
    assert same["agreement"] == 1.0 and same["max_abs_diff"] == 0.0 and same["psnr_db"] == PSNR_CAP_DB
    cand = ref.copy()
    cand[0, 0, 0, :] = -np.abs(ref[0, 0, 0, :]) - 1  # force the first row of case 0 to background
    f = fidelity(cand, ref)
    mr = ref[0, 0] > 0
    lost = int(mr[0].sum())
    want0 = 2 * (mr.sum() - lost) / (mr.sum() - lost + mr.sum())
    assert f["agreement"] == pytest.approx((want0 + 2) / 3)
    assert f["agreement_min"] == pytest.approx(want0)
    assert f["max_abs_diff"] == pytest.approx(float(np.abs(cand - ref).max()))
    assert 0 < f["psnr_db"] < PSNR_CAP_DB
    nan = cand.copy()
    nan[1, 0, 3, 3] = np.nan
    assert fidelity(nan, ref)["agreement"] == 0.0  # non-finite output is not a faithful output


def test_pareto_front():
    pts = [(10.0, 0.80), (5.0, 0.70), (20.0, 0.85), (12.0, 0.75), (5.0, 0.60)]
    assert pareto_front(pts) == [1, 0, 2]
    assert pareto_front([(5.0, 0.6475), (30.0, 0.6475 + 1e-7)]) == [0]  # a slower twin is not on the front


# ---------------------------------------------------------------- rows and status


def _row(target="onnx", precision="fp32", runtime="onnxruntime", p50=10.0, dice=0.8, agreement=0.999,
         max_abs=1e-4, status=OK, reference=False, seed=0):
    rng = np.random.default_rng(seed)
    samples = list(p50 + rng.normal(0, 0.5, 20))
    lat = latency_stats(samples) if status in (OK, FIDELITY_FAILED) else None
    if lat:
        samples = [s + p50 - lat["p50"] for s in samples]
        lat = latency_stats(samples)
    return Row(target, precision, runtime, "cpu", status=status, reference=reference,
               samples_ms=samples if lat else [], latency_ms=lat, fps=1000 / lat["mean"] if lat else None,
               dice=dice if lat else None, dice_per_case=list(rng.uniform(0.5, 1, 6)) if lat else [],
               agreement=None if reference or not lat else agreement, max_abs_diff=max_abs if lat else None,
               size_bytes=1234, threads=2)


def _run(run_id="r1", created="2026-11-21T10:00:00Z", rows=None, model="m"):
    rows = rows if rows is not None else [
        _row("torch", "fp32", "torch", p50=40.0, dice=0.80, reference=True),
        _row("onnx", "fp32", "onnxruntime", p50=20.0, dice=0.80, agreement=0.9995),
        _row("onnx", "int8", "onnxruntime", p50=30.0, dice=0.78, agreement=0.95, max_abs=0.8),
        Row("tflite", "fp16", "litert", "cpu").fail(UNAVAILABLE, "runtime 'litert' is not installed"),
    ]
    finalize_rows(rows)
    cfg = {"model": model, "weights": None, "data": "synthetic", "split": "val", "img_size": 64, "threads": 2,
           "cases": 6, "warmup": 2, "iters": 20}
    return RunResult(run_id, created, cfg, {"cpu": {"model": "fake"}, "load_average": [0.1, 0.2, 0.3]}, rows)


def test_judge_fidelity_status_logic():
    ok = judge_fidelity(_row(agreement=0.995, max_abs=1e-4))
    assert ok.status == OK and ok.reason == ""
    low = judge_fidelity(_row(agreement=0.95))
    assert low.status == FIDELITY_FAILED and "0.9500 < 0.99" in low.reason
    drift = judge_fidelity(_row(agreement=1.0, max_abs=0.5))  # fp32 must reproduce the logits
    assert drift.status == FIDELITY_FAILED and "max abs" in drift.reason
    int8 = judge_fidelity(_row(precision="int8", agreement=0.95, max_abs=0.5))
    assert int8.status == OK  # int8 is judged on its masks only, and 0.95 >= 0.90
    assert judge_fidelity(_row(precision="int8", agreement=0.95), min_agreement={"int8": 0.97}).status == \
        FIDELITY_FAILED
    failed = Row("onnx", "fp32", "onnxruntime", "cpu").fail(LOAD_FAILED, "boom\nsecond line")
    assert judge_fidelity(failed).status == LOAD_FAILED and failed.reason == "boom"
    ref = judge_fidelity(_row("torch", "fp32", "torch", reference=True))
    assert ref.status == OK  # the reference is never judged against itself
    with pytest.raises(ValueError):
        Row("onnx", "fp32", "onnxruntime", "cpu").fail(OK, "not a failure")


def test_finalize_rows_ratios_and_json_safety():
    run = _run()
    by = {(r.target, r.precision): r for r in run.rows}
    assert by[("onnx", "fp32")].speedup == pytest.approx(2.0)
    assert by[("torch", "fp32")].speedup == pytest.approx(1.0)
    assert by[("onnx", "int8")].dice_drop == pytest.approx(0.02)
    assert by[("tflite", "fp16")].speedup is None
    d = json_safe({"a": float("nan"), "b": [float("inf"), 1.0]})
    assert d == {"a": None, "b": [None, 1.0]}
    assert json.loads(json.dumps(run.to_dict()))["rows"][0]["target"] == "torch"
    assert run.counts()[UNAVAILABLE] == 1 and run.counts()[OK] == 3
    assert len(one_line("x" * 1000)) == 400


# ---------------------------------------------------------------- gates and compare


def test_compare_runs_per_row_deltas():
    a = _run("a")
    b_rows = [_row("torch", "fp32", "torch", p50=44.0, dice=0.80, reference=True),
              _row("onnx", "fp32", "onnxruntime", p50=25.0, dice=0.81),
              _row("openvino", "fp32", "openvino", p50=9.0)]
    b = _run("b", rows=b_rows)
    cmp = compare_runs(a, b)
    rows = {(r["target"], r["precision"]): r for r in cmp["rows"]}
    assert set(rows) == {("torch", "fp32"), ("onnx", "fp32")}
    assert rows[("onnx", "fp32")]["p50_delta_ms"] == pytest.approx(5.0)
    assert rows[("onnx", "fp32")]["p50_pct"] == pytest.approx(25.0)
    assert rows[("onnx", "fp32")]["dice_delta"] == pytest.approx(0.01)
    assert cmp["only_b"] == ["openvino/fp32 (openvino, cpu)"]
    assert len(cmp["only_a"]) == 2


def test_gates():
    base = _run("a")
    slower = _run("b", rows=[_row("torch", "fp32", "torch", p50=41.0, reference=True),
                             _row("onnx", "fp32", "onnxruntime", p50=26.0, agreement=0.9995),
                             _row("onnx", "int8", "onnxruntime", p50=30.0, dice=0.78, agreement=0.95)])
    fails = check_gates(slower, baseline=base, fail_on_regression=10)
    assert [(f.gate, f.row) for f in fails] == [("latency", "onnx/fp32 (onnxruntime, cpu)")]  # +30% > 10%
    assert "+30.0%" in fails[0].message
    assert check_gates(slower, baseline=base, fail_on_regression=50) == []
    assert check_gates(slower, baseline=None, fail_on_regression=10) == []  # no baseline, nothing to compare
    agree = check_gates(base, min_agreement=0.99)
    assert [f.row for f in agree] == ["onnx/int8 (onnxruntime, cpu)"]
    assert check_gates(base, min_agreement=0.9) == []
    drop = check_gates(base, max_dice_drop=0.01)
    assert [f.gate for f in drop] == ["dice-drop"] and "0.0200" in drop[0].message
    assert check_gates(base, max_dice_drop=0.05) == []
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_gates(base, min_agreement=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        check_gates(base, fail_on_regression=-5)


# ---------------------------------------------------------------- history database


def test_history_round_trip_and_queries(tmp_path):
    db = History(tmp_path / "sub" / "bench.sqlite")
    assert db.runs() == []
    a = _run("20261121T100000Z-aaaa", "2026-11-21T10:00:00Z")
    b = _run("20261121T110000Z-bbbb", "2026-11-21T11:00:00Z")
    other = _run("20261121T120000Z-cccc", "2026-11-21T12:00:00Z", model="other")
    for r in (a, b, other):
        db.save(r)
    back = db.load("20261121T110000Z-bbbb")
    assert back.to_dict() == b.to_dict()  # exact round trip, rows and all
    assert back.rows[1].samples_ms == b.rows[1].samples_ms
    assert db.resolve("20261121T10") == a.run_id
    assert db.resolve("latest") == other.run_id and db.resolve("latest~2") == a.run_id
    with pytest.raises(ValueError, match="ambiguous"):
        db.resolve("20261121T1")
    with pytest.raises(ValueError, match="no run"):
        db.resolve("nope")
    listing = db.runs()
    assert [r["run_id"] for r in listing] == [other.run_id, b.run_id, a.run_id]
    assert listing[1]["status"] == {"ok": 3, "unavailable": 1}
    assert listing[1]["best"]["p50_ms"] == pytest.approx(20.0)
    assert [r["run_id"] for r in db.runs(model="m", limit=1)] == [b.run_id]
    assert db.previous(b).run_id == a.run_id  # same comparison key, earlier
    assert db.previous(other) is None
    con = sqlite3.connect(db.path)  # the headline figures are real columns, queryable with SQL
    p50s = con.execute("SELECT p50_ms FROM rows WHERE run_id = ? AND target = 'onnx' ORDER BY idx",
                       (a.run_id,)).fetchall()
    con.close()
    assert p50s[0][0] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="already stored"):
        db.save(a)  # run ids are unique
    assert len(db.runs()) == 3


def test_history_errors_and_default_path(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no benchmark history"):
        History(tmp_path / "missing.sqlite").load("latest")
    with pytest.raises(ValueError, match="is a folder"):
        History(tmp_path).save(_run())
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match="not a usable benchmark database"):
        History(junk).save(_run())
    monkeypatch.setenv("EDGESEG_BENCH_DB", str(tmp_path / "env.sqlite"))
    assert default_db_path() == tmp_path / "env.sqlite"
    monkeypatch.delenv("EDGESEG_BENCH_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "edgeseg" / "bench.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local" / "share" / "edgeseg" / "bench.sqlite"
    assert comparison_key({"model": "m", "threads": 2}) != comparison_key({"model": "m", "threads": 1})


# ---------------------------------------------------------------- reports and environment


def test_reports_are_written_and_self_contained(tmp_path):
    run = _run()
    paths = write_reports(run, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"bench.json", "bench.csv", "bench.md", "report.html"}
    data = json.loads(paths["json"].read_text())
    assert data["run_id"] == "r1" and len(data["rows"]) == 4 and data["environment"]["cpu"]["model"] == "fake"
    rows = list(csv.DictReader(io.StringIO(to_csv(run))))
    assert len(rows) == 4 and float(rows[1]["p50_ms"]) == pytest.approx(20.0) and rows[3]["status"] == UNAVAILABLE
    md = to_markdown(run)
    assert md.count("\n| ") == 5 and "2.00x" in md  # header + 4 rows; onnx fp32 is 2x the reference
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "runtime &#x27;litert&#x27; is not installed" in html


def test_environment_and_compute_peak():
    assert envmod.flops_per_cycle(["avx", "avx2", "fma", "avx512f"], "GenuineIntel") == 64
    assert envmod.flops_per_cycle(["avx", "avx2", "fma", "avx512f"], "AuthenticAMD") == 32
    assert envmod.flops_per_cycle(["avx", "avx2", "fma"]) == 32
    assert envmod.flops_per_cycle(["sse4_2"]) == 8
    assert envmod.peak_gflops({"mhz": 2000.0, "isa": ["avx2", "fma"], "vendor": ""}, 2) == pytest.approx(128.0)
    assert envmod.peak_gflops({"mhz": None}, 2) is None
    assert envmod.compute_floor_ms(1e9, 100.0) == pytest.approx(20.0)  # 2 GFLOP at 100 GFLOP/s
    env = envmod.capture_environment(threads=2)
    assert env["threads"] == 2 and env["cpu"]["usable_cores"] >= 1
    assert len(env["load_average"]) == 3 and env["packages"]["numpy"] == np.__version__
    assert any(r.get("name") == "onnxruntime" for r in env["runtimes"])
    json.dumps(env)


def test_performance_summary_ratios():
    from edgeseg.benchmarks.report import performance_summary

    run = _run()
    run.config["compute_floor_ms"] = 2.0
    s = performance_summary(run)
    assert s["fastest"]["row"] == "onnx/fp32 (onnxruntime, cpu)"
    assert s["fastest"]["speedup_vs_torch"] == pytest.approx(2.0)
    assert s["fastest"]["x_compute_floor"] == pytest.approx(10.0)  # 20 ms / 2 ms
    (int8,) = s["vs_fp32_same_runtime"]
    assert int8["precision"] == "int8" and int8["speedup_vs_fp32"] == pytest.approx(20.0 / 30.0)
    assert s["x_compute_floor"]["torch/fp32 (torch, cpu)"] == pytest.approx(20.0)


def test_runtime_option_parsing():
    from edgeseg.cli.bench import parse_runtime_options

    got = parse_runtime_options(["openvino.hint=THROUGHPUT", "litert.xnnpack=false", "onnxruntime.optimization=basic"],
                                {"openvino": {"hint": "LATENCY", "cache_dir": "/tmp/x"}})
    assert got == {"openvino": {"hint": "THROUGHPUT", "cache_dir": "/tmp/x"}, "litert": {"xnnpack": False},
                   "onnxruntime": {"optimization": "basic"}}
    with pytest.raises(ValueError, match="RUNTIME.KEY=VALUE"):
        parse_runtime_options(["hint=LATENCY"])
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        parse_runtime_options(["tensorrt.fp16=true"])


def test_convert_options_parse_and_get_their_own_cache_folder(tmp_path):
    from edgeseg.benchmarks.harness import artifact_path

    from edgeseg.cli.bench import parse_convert_options

    assert parse_convert_options(["onnx.calib_method=percentile", "tflite.quantizer=aeq"]) == {
        "onnx": {"calib_method": "percentile"}, "tflite": {"quantizer": "aeq"}}
    with pytest.raises(ValueError, match="unknown target 'tensorrt'"):
        parse_convert_options(["tensorrt.fp16=true"])
    plain = artifact_path(tmp_path, "m", 64, "ab" * 32, "onnx", "int8")
    pct = artifact_path(tmp_path, "m", 64, "ab" * 32, "onnx", "int8", {"calib_method": "percentile"})
    assert plain.name == pct.name == "m_int8.onnx" and plain.parent != pct.parent
    assert pct == artifact_path(tmp_path, "m", 64, "ab" * 32, "onnx", "int8", {"calib_method": "percentile"})


def test_failed_rows_fail_a_gated_run_and_a_run_with_nothing_ok_fails():
    """bench used to exit 0 with rows that failed to convert or load, even with a gate set, and with no ok row."""
    broken = _run("c", rows=[_row("torch", "fp32", "torch", p50=40.0, reference=True),
                             _row("onnx", "fp32", "onnxruntime", p50=20.0, agreement=0.9995),
                             Row("onnx", "int8", "onnxruntime", "cpu").fail(CONVERT_FAILED, "calibration crashed")])
    assert check_gates(broken) == []  # no gate: a failed row is reported, not judged
    fails = check_gates(broken, min_agreement=0.9)
    assert [(f.gate, f.row) for f in fails] == [("row-failed", "onnx/int8 (onnxruntime, cpu)")]
    assert "calibration crashed" in fails[0].message
    none_ok = _run("d", rows=[_row("torch", "fp32", "torch", p50=40.0, reference=True),
                              Row("onnx", "fp32", "onnxruntime", "cpu").fail(LOAD_FAILED, "bad file"),
                              Row("tflite", "fp32", "litert", "cpu").fail(UNAVAILABLE, "not installed")])
    assert [f.gate for f in check_gates(none_ok)] == ["nothing-ok"]


def test_a_database_that_cannot_take_the_run_is_refused_before_the_run(tmp_path, capsys):
    """A finished run used to be thrown away when --db could not be opened; and history said "no runs"."""
    from edgeseg.cli import main

    out = tmp_path / "out"
    code = main(["bench", "--model", "ultralightunet-t", "--targets", "onnx", "--precisions", "fp32",
                 "--data", "synthetic:2", "--db", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "is a folder" in err and not out.exists()  # nothing ran
    assert main(["bench", "history", "--db", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    db = History(tmp_path / "ok.sqlite")
    db.check()
    assert db.path.is_file() and db.runs() == []


def test_recommendation_says_plainly_when_int8_does_not_pay():
    from edgeseg.benchmarks.report import recommendation_lines, recommendations

    slow_int8 = recommendations(_run("e"))  # onnx int8 30 ms vs fp32 20 ms
    [onnx] = [r for r in slow_int8 if r["runtime"] == "onnxruntime"]
    assert onnx["pick"]["precision"] == "fp32" and onnx["int8_vs_fp32"] == pytest.approx(1.5, rel=0.05)
    assert "int8 does not pay on this CPU: 1.50x the fp32 time" in recommendation_lines([onnx])[0]
    fast = _run("f", rows=[_row("torch", "fp32", "torch", p50=40.0, reference=True),
                           _row("openvino", "fp32", "openvino", p50=20.0),
                           _row("openvino", "int8", "openvino", p50=10.0, dice=0.795, agreement=0.99)])
    [ov] = recommendations(fast)
    assert ov["pick"]["precision"] == "int8" and "int8 is 2.00x faster than fp32" in ov["note"]
