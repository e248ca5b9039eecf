"""Find this machine's fastest runtime settings for artifacts and record them in their manifests.

A short search over threads and the backend's own knobs (onnxruntime: thread spinning and graph
optimisation; OpenVINO: performance hint and thread pinning), candidates interleaved so that load from other
processes hits them alike, each checked to leave the output unchanged. The winner is written into the
artifact's manifest for this machine (CPU model, cores, int8 path), and `runtimes.load` (so predict, evaluate,
bench and the demo) uses it by default; explicit --threads and options still win.

Examples:
  edgeseg tune exports/ultralightunet-s_fp32.xml exports/ultralightunet-s_fp32.onnx
  edgeseg tune exports/ultralightunet-s_fp32.onnx --runtime openvino --no-write --json
"""

from __future__ import annotations

import argparse
import sys

from edgeseg.cli._format import add_format_argument, print_json, table, wants_json
from edgeseg.common.args import add_runtime_arguments, positive_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifacts", nargs="+", help="artifact files (.onnx, .xml, .tflite, .pte) with their manifests")
    add_runtime_arguments(p, options=("runtime", "device"), title=None)  # threads are what it searches
    p.add_argument("--budget-s", type=positive_float, default=60.0,
                   help="stop trying further settings after this many seconds per artifact (default 60)")
    p.add_argument("--rounds", type=positive_int, default=15, help="interleaved timing rounds (default 15)")
    p.add_argument("--no-write", action="store_true", help="report only; leave the manifests unchanged")
    add_format_argument(p)


def main(args: argparse.Namespace) -> int:
    from edgeseg.runtimes.tuning import TuneOptions, record, settings_label, tune

    opts = TuneOptions(rounds=args.rounds, budget_s=args.budget_s)
    results = []
    for artifact in args.artifacts:
        print(f"tuning {artifact} ...", file=sys.stderr)
        result = tune(artifact, runtime=args.runtime, device=args.device, options=opts)
        entry = result.to_dict()
        if not args.no_write:
            entry["manifest"] = str(record(artifact, result))
        entry["artifact"] = artifact
        results.append(entry)
    if wants_json(args):
        print_json(results)
        return 0
    for r in results:
        print(f"{r['artifact']} ({r['runtime']}, {r['device']}, {r['machine']}; {r['seconds']:.1f} s)")
        rows = [[t.get("knob", ""), t.get("label", ""), "" if t.get("p50_ms") is None else f"{t['p50_ms']:.3f}",
                 t["status"]] for t in r["trials"]]
        print(table(rows, ["knob", "settings", "p50 ms", "status"]))
        chosen = settings_label(r["settings"])
        where = "recorded in " + r["manifest"] if "manifest" in r else "not recorded (--no-write)"
        print(f"chosen: {chosen}: {r['p50_ms']:.3f} ms against the default's {r['default_p50_ms']:.3f} ms "
              f"({r['speedup']:.2f}x, one interleaved run); {where}\n")
    return 0
