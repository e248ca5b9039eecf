"""Live polyp segmentation on a camera, a video file or the synthetic endoscopy sequence.

Runs a converted artifact (--artifact, no torch needed) or a registered model through the torch runtime
(--model). Capture runs in its own thread and inference always takes the newest frame (stale frames are
dropped and counted) for cameras and with --realtime; video files and the synthetic sequence are otherwise
processed frame by frame, every frame, so counts are deterministic.

Keys (with a window): q quit, space pause, s snapshot, +/- threshold.
Exit codes: 0 done (source ended, --max-frames, q, Ctrl-C), 2 bad input (no camera, unreadable video,
artifact/model mismatch), 3 the camera stopped delivering frames mid-stream, 1 inference failed mid-stream;
the recording and the log written so far are finalised in every case.

examples:
  edgeseg demo --artifact exports/ultralightunet-s_fp32.xml --headless --record demo.mp4 --log demo.jsonl
  edgeseg demo --model ultralightunet-s --source 0
  edgeseg demo --artifact model.onnx --source clip.mp4 --headless --serve 8080
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    # The demo's arguments live with the app (apps.endoscopy.cli), which does not import edgeseg.cli.
    from apps.endoscopy.cli import add_arguments as app_arguments

    app_arguments(p)


def main(args: argparse.Namespace) -> int:
    from apps.endoscopy.cli import run

    return run(args)
