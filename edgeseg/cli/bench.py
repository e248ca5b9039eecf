"""Benchmark every format/precision against the FP32 torch model: latency, accuracy, fidelity, history.

Forms:
  edgeseg bench --model NAME [--targets all] [--precisions all] [--data PATH|synthetic] ...   one run
  edgeseg bench --suite kvasir-polyp                      a suite from benchmarks/suites (or a YAML path)
  edgeseg bench history [--last N] [--model NAME]         runs stored in the database, newest first
  edgeseg bench compare RUN_A RUN_B                       per-row deltas (ids, unique prefixes, latest, latest~1)
  edgeseg bench show RUN [--out DIR]                      print a stored run (and rewrite its reports)

Each run writes bench.json, bench.csv, bench.md and report.html into --out and is stored in the history
database ($EDGESEG_BENCH_DB, else $XDG_DATA_HOME/edgeseg/bench.sqlite, else ~/.local/share/edgeseg/...).
Gates (--fail-on-regression PCT, --min-agreement X, --max-dice-drop X) make the exit code 3 when they fail.
"""

from __future__ import annotations

import argparse
import sys

from edgeseg.cli._format import add_format_argument, print_json, table, wants_json
from edgeseg.common.args import add_data_argument, add_model_arguments, add_runtime_arguments, positive_int

ACTIONS = ("run", "history", "compare", "show")
GATE_EXIT = 3

# run options whose defaults apply only after the suite (options given on the command line win)
_RUN_DEFAULTS = {"targets": "all", "precisions": "all", "devices": "cpu", "data": "synthetic", "split": "val",
                 "threads": 2, "warmup": 10, "iters": 50, "calibration": 32}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="run", metavar="ACTION",
                   help=f"one of {', '.join(ACTIONS)} (default: run)")
    p.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids for compare/show")
    g = p.add_argument_group("what to run")
    add_model_arguments(g, options=("model", "weights"), title=None,
                        helps={"weights": "checkpoint (default: the shipped weights, else a seeded random init)"})
    g.add_argument("--suite", help="a suite name from benchmarks/suites or a YAML path")
    g.add_argument("--targets", help="onnx,openvino,tflite or all (default: all)")
    g.add_argument("--precisions", help="fp32,fp16,int8 or all (default: all)")
    g.add_argument("--devices", help="cpu,gpu,npu or all (default: cpu); missing ones become unavailable rows")
    g.add_argument("--runtimes", help="backends to use (default: each target's own; e.g. openvino also runs onnx)")
    add_data_argument(g, default=None)  # None: the suite's, else synthetic
    g.add_argument("--split", help="benchmark split (default: val); 'all' for every pair")
    g.add_argument("--img-size", type=positive_int, help="square input size (default: the size the weights were trained at, else the model's)")
    g.add_argument("--limit", type=int, help="use only the first N cases")
    g.add_argument("--calibration", type=int, help="int8 calibration images from the train split (default: 32)")
    m = p.add_argument_group("how to measure")
    add_runtime_arguments(m, options=("threads",), threads_default="2, for every runtime", title=None)
    m.add_argument("--warmup", type=int, help="untimed inferences after the first (default: 10)")
    m.add_argument("--iters", type=int, help="timed inferences per row (default: 50)")
    m.add_argument("--min-time", type=float, help="time each row for at least S seconds instead of --iters")
    m.add_argument("--runtime-option", action="append", default=[], metavar="RUNTIME.KEY=VALUE",
                   help="backend option, repeatable (e.g. openvino.hint=THROUGHPUT, litert.xnnpack=false, "
                        "onnxruntime.optimization=extended)")
    g.add_argument("--convert-option", action="append", default=[], metavar="TARGET.KEY=VALUE",
                   help="converter option, repeatable (e.g. onnx.calib_method=percentile, tflite.quantizer=aeq); "
                        "artifacts made with options are cached apart")
    m.add_argument("--busy-wait", default="off", choices=["off", "on", "default"],
                   help="spinning thread pools: off (default; OMP_WAIT_POLICY=PASSIVE for torch, no intra-op "
                        "spinning in onnxruntime; spinning makes them many times slower on a shared machine), "
                        "on (ACTIVE/spinning, for a dedicated device), default (each library's own)")
    m.add_argument("--tune", action="store_true",
                   help="before measuring, search each artifact's fastest runtime settings on this machine at "
                        "--threads and record them in its manifest (as `edgeseg tune`); rows record what was used")
    m.add_argument("--no-isolate", action="store_true",
                   help="run rows in this process (faster; a crash ends the run; peak memory is cumulative)")
    m.add_argument("--row-timeout", type=float, default=1800.0, help="seconds per stage of a row (default: 1800)")
    m.add_argument("--no-reuse", action="store_true", help="convert again even when a cached artifact exists")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="bench-out", help="report folder (default: bench-out)")
    o.add_argument("--artifacts", help="artifact cache folder (default: OUT/artifacts)")
    o.add_argument("--db", help="history database (default: $EDGESEG_BENCH_DB or the user data dir)")
    o.add_argument("--no-db", action="store_true", help="do not store the run")
    o.add_argument("--no-html", action="store_true", help="skip the HTML report")
    o.add_argument("--profile", action="store_true",
                   help="per-op profiles of every ok row from its runtime's own profiler (after the timing)")
    o.add_argument("--video", metavar="CLIPS",
                   help="also score every artifact on video clips, smoothing off and on: N or NxFRAMES simulated "
                        "pan-on clips over --data's val images (e.g. 8x120), or clip folders (DIR[,DIR...]; "
                        "python -m edgeseg.benchmarks.temporal --write DIR)")
    o.add_argument("--no-layers", action="store_true",
                   help="skip the layer-wise comparison of one int8 artifact per backend (a few seconds each)")
    add_format_argument(o)
    o.add_argument("--last", type=int, default=20, help="history: how many runs (default: 20)")
    c = p.add_argument_group("gates (exit code 3 when one fails)")
    c.add_argument("--fail-on-regression", type=float, metavar="PCT",
                   help="fail when a row's p50 is more than PCT%% above the baseline run's")
    c.add_argument("--baseline", help="baseline run for --fail-on-regression (default: the previous comparable run)")
    c.add_argument("--min-agreement", type=float, metavar="X", help="fail when a row's mask agreement is below X")
    c.add_argument("--max-dice-drop", type=float, metavar="X",
                   help="fail when a row's Dice is more than X below the FP32 reference's")


def _history(args):
    from edgeseg.benchmarks.history import History

    return History(args.db)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _print_rows(run) -> None:
    rows = []
    for r in run.rows:
        rows.append([f"{r.target}/{r.precision}", r.runtime, r.device, r.status, _fmt(r.p50, ".2f"),
                     _fmt(r.fps, ".1f"), "-" if r.speedup is None else f"{r.speedup:.2f}x", _fmt(r.dice, ".4f"),
                     _fmt(r.agreement, ".4f"), _fmt(r.max_abs_diff, ".1e"), r.reason[:60]])
    print(table(rows, ["row", "runtime", "device", "status", "p50 ms", "FPS", "vs torch", "Dice", "agreement",
                       "max abs", "reason"]))


def _parse_options(items: list[str], base: dict | None, valid: list[str], flag: str, what: str,
                   example: str) -> dict[str, dict]:
    import yaml

    out = {k: dict(v) for k, v in (base or {}).items()}
    for item in items:
        head, sep, value = item.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"{flag} {item!r}: use {what.upper()}.KEY=VALUE, e.g. {example}")
        if name not in valid:
            raise ValueError(f"{flag} {item!r}: unknown {what} {name!r}; valid: {', '.join(valid)}")
        out.setdefault(name, {})[key] = yaml.safe_load(value)
    return out


def parse_runtime_options(items: list[str], base: dict | None = None) -> dict[str, dict]:
    """``["openvino.hint=LATENCY", ...]`` -> ``{"openvino": {"hint": "LATENCY"}}`` (values read as YAML)."""
    from edgeseg.runtimes import list_runtimes

    return _parse_options(items, base, list_runtimes(), "--runtime-option", "runtime", "openvino.hint=LATENCY")


def parse_convert_options(items: list[str], base: dict | None = None) -> dict[str, dict]:
    """``["onnx.calib_method=percentile"]`` -> ``{"onnx": {"calib_method": "percentile"}}``."""
    from edgeseg.benchmarks.harness import TARGETS

    return _parse_options(items, base, list(TARGETS), "--convert-option", "target", "onnx.calib_method=percentile")


def _config(args):
    from edgeseg.benchmarks.harness import BenchConfig
    from edgeseg.benchmarks.suite import load_suite

    suite = load_suite(args.suite) if args.suite else {}
    model = args.model or suite.get("model")
    if not model:
        raise ValueError("say which model to benchmark: --model NAME (or --suite NAME); "
                         "`edgeseg models` lists them")

    def pick(name: str, attr: str | None = None):
        v = getattr(args, attr or name, None)
        if v is not None:
            return v
        if name in suite and suite[name] is not None:
            return suite[name]
        return _RUN_DEFAULTS.get(name)

    split = pick("split")
    fid = suite.get("fidelity") or {}
    iters, min_time = pick("iters"), pick("min_time")
    if args.min_time is not None:
        iters = None
    elif args.iters is not None:
        min_time = None
    return BenchConfig(
        model=model, weights=pick("weights"), targets=pick("targets"), precisions=pick("precisions"),
        devices=pick("devices"), runtimes=pick("runtimes"), data=str(pick("data")),
        split=None if split == "all" else split, img_size=pick("img_size"), threads=pick("threads"),
        warmup=pick("warmup"), iters=iters, min_time=min_time, limit=pick("limit"),
        calibration=pick("calibration"), out=args.out, artifacts=args.artifacts, reuse=not args.no_reuse,
        isolate=not args.no_isolate, row_timeout=args.row_timeout, suite=suite.get("name"),
        busy_wait=args.busy_wait, tune=args.tune, video=pick("video"),
        min_agreement=fid.get("min_agreement") or {}, max_abs_diff=fid.get("max_abs_diff") or {},
        runtime_options=parse_runtime_options(args.runtime_option, suite.get("runtime_options")),
        convert_options=parse_convert_options(args.convert_option, suite.get("convert_options")),
    ), suite.get("gates") or {}


def _run(args) -> int:
    from edgeseg.benchmarks.compare import check_gates
    from edgeseg.benchmarks.harness import run_benchmark
    from edgeseg.benchmarks.report import write_reports

    cfg, suite_gates = _config(args)
    gates = {k: getattr(args, k) if getattr(args, k) is not None else suite_gates.get(k)
             for k in ("fail_on_regression", "min_agreement", "max_dice_drop")}
    db = None if args.no_db else _history(args)
    if db is not None:
        db.check()  # a database the run could not be stored in is refused before the run, not after
    run = run_benchmark(cfg)
    if not args.no_layers:
        from edgeseg.benchmarks.layers import layer_sections

        run.layers = layer_sections(run, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.profile:
        from edgeseg.benchmarks.profile import profile_rows

        run.profiles = profile_rows(run, log=lambda m: print(m, file=sys.stderr, flush=True))
    if cfg.video:
        from edgeseg.benchmarks.video import VideoSpec, video_rows

        run.video = video_rows(run, VideoSpec(**cfg.video), log=lambda m: print(m, file=sys.stderr, flush=True))
    paths = write_reports(run, cfg.out, html=not args.no_html)  # the reports first: they survive a DB fault
    baseline = None
    if gates["fail_on_regression"] is not None and db is not None:
        baseline = db.load(args.baseline) if args.baseline else db.previous(run)
    if db is not None:
        try:
            db.save(run)
        except ValueError as exc:
            raise ValueError(f"{exc} (the run's reports were written: {', '.join(map(str, paths.values()))})") \
                from None
    failures = check_gates(run, baseline, **gates)
    if wants_json(args):
        d = run.to_dict()
        d["gates"] = {"failures": [f.to_dict() for f in failures], "baseline": baseline and baseline.run_id, **gates}
        print_json(d)
    else:
        _print_rows(run)
        from edgeseg.benchmarks.report import recommendation_lines, recommendations

        for line in recommendation_lines(recommendations(run)):
            print(f"recommended: {line}")
        print(f"\nrun {run.run_id}: reports in {', '.join(str(p) for p in paths.values())}"
              + ("" if db is None else f"; stored in {db.path}"))
    if gates["fail_on_regression"] is not None and baseline is None:
        print("edgeseg: note: --fail-on-regression has no baseline (no earlier comparable run); not checked",
              file=sys.stderr)
    for f in failures:
        print(f"edgeseg: gate {f.gate} failed: {f.row}: {f.message}", file=sys.stderr)
    return GATE_EXIT if failures else 0


def _show_history(args) -> int:
    runs = _history(args).runs(model=args.model, limit=args.last)
    if wants_json(args):
        print_json(runs)
        return 0
    if not runs:
        print(f"no runs stored in {_history(args).path}")
        return 0
    rows = [[r["run_id"], r["created"], r["model"], r["suite"] or "-", r["rows"],
             " ".join(f"{k}:{v}" for k, v in sorted(r["status"].items())),
             "-" if r["best"] is None else f"{r['best']['p50_ms']:.2f} {r['best']['row']}"]
            for r in runs]
    print(table(rows, ["run", "created (UTC)", "model", "suite", "rows", "status", "fastest ok row (p50 ms)"]))
    return 0


def _compare(args) -> int:
    from edgeseg.benchmarks.compare import compare_runs

    if len(args.run_ids) != 2:
        raise ValueError("compare takes two runs: edgeseg bench compare RUN_A RUN_B (see `edgeseg bench history`)")
    db = _history(args)
    a, b = db.load(args.run_ids[0]), db.load(args.run_ids[1])
    cmp = compare_runs(a, b)
    if wants_json(args):
        print_json(cmp)
        return 0
    rows = [[f"{r['target']}/{r['precision']}", r["runtime"], r["device"], f"{r['status_a']} -> {r['status_b']}",
             _fmt(r["p50_a"], ".2f"), _fmt(r["p50_b"], ".2f"),
             "-" if r["p50_pct"] is None else f"{r['p50_pct']:+.1f}%", _fmt(r["dice_delta"], "+.4f"),
             _fmt(r["agreement_delta"], "+.4f")] for r in cmp["rows"]]
    print(f"{a.run_id} -> {b.run_id}")
    print(table(rows, ["row", "runtime", "device", "status", "p50 A", "p50 B", "p50 change", "Dice change",
                       "agreement change"]))
    for label in cmp["only_a"]:
        print(f"only in {a.run_id}: {label}")
    for label in cmp["only_b"]:
        print(f"only in {b.run_id}: {label}")
    return 0


def _show(args) -> int:
    if len(args.run_ids) != 1:
        raise ValueError("show takes one run: edgeseg bench show RUN (see `edgeseg bench history`)")
    run = _history(args).load(args.run_ids[0])
    if args.out != "bench-out":
        from edgeseg.benchmarks.report import write_reports

        write_reports(run, args.out, html=not args.no_html)
    if wants_json(args):
        print_json(run.to_dict())
    else:
        _print_rows(run)
    return 0


def main(args: argparse.Namespace) -> int:
    action = args.action
    if action not in ACTIONS:
        import difflib

        close = difflib.get_close_matches(action, ACTIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown bench action {action!r}.{hint} Valid: {', '.join(ACTIONS)} "
                         "(a run is just `edgeseg bench --model NAME ...`)")
    if action != "run" or args.run_ids:
        if action == "run":
            raise ValueError(f"unexpected argument(s) {' '.join(args.run_ids)}; a run takes only options")
    return {"run": _run, "history": _show_history, "compare": _compare, "show": _show}[action](args)
