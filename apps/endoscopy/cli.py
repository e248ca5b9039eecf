"""Arguments and entry point of the demo (``python -m apps.endoscopy``; ``edgeseg demo`` delegates here).

Live polyp segmentation on a camera, a video file, a folder of frames (a clip) or the synthetic endoscopy sequence.

Runs a converted artifact (--artifact, no torch needed) or a registered model (--model). Through `edgeseg
demo`, --model runs the fastest verified artifact of the model on this machine (converted once and cached in
~/.cache/edgeseg or $EDGESEG_CACHE); torch eager only with --runtime torch; where torch is absent, the
artifact shipped in the package. An artifact is checked against its manifest's sha256 (--no-hash-check for
one edited on purpose); one without a manifest is refused unless --preprocessing gives its pre-processing.
Capture runs in its own thread and inference always takes the newest frame (stale frames are dropped and
counted) for cameras and with --realtime; video files, folders and the synthetic sequence are otherwise
processed frame by frame, every frame, so counts are deterministic. --realtime paces a file or folder at its
frame rate (a clip's clip.json says it; 30 fps otherwise), as a camera would deliver it.
--log writes one JSON line per shown frame with each stage's time and the capture-to-shown time;
`python -m edgeseg.apps.endoscopy.latency OUT.jsonl` turns it into p50/p90/p99 per stage and the frame-interval
jitter. Clips with ground truth: `python -m edgeseg.benchmarks.temporal --write DIR`; score a model on them with
`edgeseg evaluate --video DIR`.

Keys (with a window): q quit, space pause, s snapshot, +/- threshold.
Exit codes: 0 done (source ended, --max-frames, q, Ctrl-C), 2 bad input (no camera, unreadable video,
artifact/model mismatch), 3 the camera stopped delivering frames mid-stream, 1 inference failed mid-stream;
the recording and the log written so far are finalised in every case.

examples:
  edgeseg demo --artifact exports/ultralightunet-s_fp32.xml --headless --record demo.mp4 --log demo.jsonl
  edgeseg demo --model ultralightunet-s --source 0
  edgeseg demo --artifact model.onnx --source clip.mp4 --headless --serve 8080
  edgeseg demo --model ultralightunet-s --source clips/clip-00 --realtime --headless --log demo.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from edgeseg.common.args import add_artifact_arguments, add_model_arguments, add_runtime_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, options=("artifact", "model"), title=None, helps={
        "model": "registered model name: the fastest verified artifact for this machine (with --runtime torch: "
                 "the torch model); with --artifact, checks that it is that model"})
    p.add_argument(
        "--source",
        default="synthetic",
        help="camera index (0), device path (/dev/video0), video file, folder of frames (a clip written by "
        "edgeseg.benchmarks.temporal --write, or any folder of images), or 'synthetic' (default)",
    )
    add_artifact_arguments(p)
    add_runtime_arguments(p, title=None)
    p.add_argument("--headless", action="store_true", help="no window (a device over ssh): record/log/serve")
    p.add_argument("--record", default=None, metavar="OUT.mp4", help="write the annotated video (.mp4, .avi)")
    p.add_argument("--log", default=None, metavar="OUT.jsonl", help="write one JSON line per processed frame")
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        metavar="N",
        help="stop after N frames (headless synthetic source without --serve: 300 by default)",
    )
    p.add_argument(
        "--serve",
        type=int,
        default=None,
        metavar="PORT",
        help="MJPEG stream of the overlay at http://127.0.0.1:PORT/",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="read a file, a folder / the synthetic sequence as a live camera (paced at its fps, newest frame wins)",
    )
    p.add_argument("--snapshot-dir", default=".", help="where the s key saves snapshots")
    p.add_argument("--alpha", type=float, default=0.45, help="mask tint opacity (0-1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sequence")
    p.add_argument("--size", type=int, default=256, help="frame size of the synthetic sequence")
    p.add_argument(
        "--camera-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds without a frame before a camera counts as unplugged (default 2)",
    )
    p.add_argument("--summary-json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--no-stabilize", dest="stabilize", action="store_false",
                   help="show each frame's raw mask (default: steady masks: smoothing, minimum area, persistence, "
                        "tracked regions; see docs/notes/issue-17.md)")


def run(args: argparse.Namespace) -> int:
    """Run the demo for parsed arguments; returns the exit code."""
    from edgeseg.apps.endoscopy import EXIT_CODES, DemoConfig, run_demo

    config = DemoConfig(
        artifact=args.artifact,
        model=args.model,
        source=args.source,
        runtime=args.runtime,
        check_files=not args.no_hash_check,
        preprocessing=args.preprocessing,
        device=args.device,
        threads=args.threads,
        threshold=args.threshold,
        headless=args.headless,
        record=args.record,
        log=args.log,
        max_frames=args.max_frames,
        serve=args.serve,
        realtime=args.realtime,
        snapshot_dir=args.snapshot_dir,
        alpha=args.alpha,
        seed=args.seed,
        size=args.size,
        camera_timeout=args.camera_timeout,
        stabilize=args.stabilize,
    )
    summary = run_demo(config)
    if args.summary_json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        print(summary.text())
    code = EXIT_CODES.get(summary.status, 1)
    if code:
        what = "" if summary.status == "error" else f"{summary.status}: "
        print(f"edgeseg: error: {what}{summary.message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apps.endoscopy``: parse, run, and turn bad input into one line and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m apps.endoscopy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, ImportError, OSError) as exc:
        from edgeseg.common.errors import first_line

        print(f"edgeseg demo: error: {first_line(exc)}", file=sys.stderr)
        return 2
