"""The demo loop: newest frame -> :class:`~edgeseg.apps.endoscopy.step.FrameStep` -> outputs, until the source ends.

One frame at a time, in the caller's thread; only capture runs beside it (for live sources), so the shown
frame is the one the mask was computed on and the overlay lags the camera by at most one inference. Files,
folders of frames and the synthetic sequence are read synchronously unless ``realtime`` (see
:mod:`edgeseg.apps.endoscopy.capture`). Each frame is one step (segment, steady, draw: ``step.py``) and
then goes to the outputs (record, stream, window: ``outputs.py``, ``controls.py``); its log line, written
last, carries every stage's time and the capture-to-shown time (``latency.py`` summarises a log).

Every way the loop can end (source finished, ``--max-frames``, q, Ctrl-C/SIGTERM, camera unplugged, a
runtime error mid-stream) goes through the same exit: recording and log are finalised, the summary says
what happened.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.apps.endoscopy.capture import Source, SourceLost, SyntheticSource, open_source
from edgeseg.apps.endoscopy.controls import (
    THRESHOLD_STEP,
    WINDOW,
    Display,
    LoopState,
    apply_keys,
    handle_key,
    stop_on_signals,
)
from edgeseg.apps.endoscopy.grabber import LatestFrameGrabber, reader_for
from edgeseg.apps.endoscopy.inference import Segmenter, open_segmenter
from edgeseg.apps.endoscopy.outputs import CODECS, Outputs, Summary
from edgeseg.apps.endoscopy.overlay import HudInfo
from edgeseg.apps.endoscopy.stabilize import Stabilizer
from edgeseg.apps.endoscopy.step import FrameResult, FrameStep
from edgeseg.apps.endoscopy.timing import Stats, intervals

from edgeseg.common.io import WriteError

# synthetic source, headless, nobody watching, no --max-frames: stop after this many frames
DEFAULT_SYNTHETIC_FRAMES = 300
# exit codes (the CLI returns them); startup errors are 2 through the CLI's error handling
EXIT_CODES = {"completed": 0, "quit": 0, "interrupted": 0, "source-lost": 3, "error": 1}


@dataclass
class DemoConfig:
    """Options of one demo run (the ``edgeseg demo`` flags).

    Attributes:
        artifact: converted model file.
        model: model name (torch runtime without artifact; a consistency check with one).
        source: camera index, device path, video file, folder of frames (a clip) or "synthetic".
        runtime: backend (default: from the manifest).
        check_files: refuse an artifact whose files differ from its manifest's sha256 (``--no-hash-check``
            turns it off).
        preprocessing: the pre-processing of an artifact without a manifest (JSON text or file; see
            ``edgeseg.runtimes.load``).
        device: backend device.
        threads: inference threads.
        threshold: probability threshold (default: the manifest's).
        headless: no window; write/serve only.
        record: annotated video path.
        log: per-frame JSONL path.
        max_frames: stop after this many processed frames.
        serve: MJPEG port (None: off).
        realtime: read files, folders / the synthetic sequence as a live stream (paced, stale frames dropped).
        snapshot_dir: where ``s`` saves snapshots.
        alpha: mask tint opacity.
        seed: synthetic sequence seed.
        size: synthetic frame size.
        camera_timeout: seconds without a frame after which a live camera counts as unplugged.
        stabilize: show steady masks (:mod:`edgeseg.apps.endoscopy.stabilize`: smoothing, minimum area,
            persistence, tracks with ids) instead of each frame's raw mask.
    """

    artifact: str | None = None
    model: str | None = None
    source: str = "synthetic"
    runtime: str | None = None
    check_files: bool = True
    preprocessing: str | None = None
    device: str = "cpu"
    threads: int | None = None
    threshold: float | None = None
    headless: bool = False
    record: str | None = None
    log: str | None = None
    max_frames: int | None = None
    serve: int | None = None
    realtime: bool = False
    snapshot_dir: str = "."
    alpha: float = 0.45
    seed: int = 0
    size: int = 256
    camera_timeout: float = 2.0
    stabilize: bool = True

    def validate(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {self.max_frames}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.size < 32:
            raise ValueError(f"--size must be >= 32, got {self.size}")
        if self.record is not None and Path(self.record).suffix.lower() not in CODECS:
            raise ValueError(
                f"--record {self.record}: unsupported container {Path(self.record).suffix or '(none)'}; "
                f"use one of {', '.join(CODECS)}"
            )
        if self.serve is not None and not 0 <= self.serve <= 65535:
            raise ValueError(f"--serve port must be 0-65535, got {self.serve}")
        if self.camera_timeout <= 0:
            raise ValueError(f"--camera-timeout must be positive, got {self.camera_timeout}")


def run_demo(
    config: DemoConfig,
    segmenter: Segmenter | None = None,
    source: Source | None = None,
    display: Any = None,
    on_frame: Any = None,
) -> Summary:
    """Run the demo until the source ends, ``max_frames``, q, Ctrl-C, or the camera vanishes.

    Args:
        config: the options.
        segmenter: an opened segmenter (default: opened from ``config``).
        source: a frame source (default: opened from ``config.source``).
        display: an object with ``show(frame) -> key`` and ``close()`` (default: an OpenCV window unless
            headless).
        on_frame: optional callback taking a :class:`FrameResult` after each frame (tests, embedding).

    Returns:
        The :class:`Summary` (its ``status`` tells how the run ended; ``EXIT_CODES`` maps it to an exit code).

    Raises:
        ValueError / FileNotFoundError: bad options, no camera, unreadable video, artifact mismatch (all
            before the first frame; nothing is written then).
    """
    config.validate()
    max_frames = config.max_frames
    if source is None:
        endless_ok = not config.headless or config.serve is not None
        synth_frames = max_frames if max_frames is not None or endless_ok else DEFAULT_SYNTHETIC_FRAMES
        source = open_source(
            config.source,
            realtime=config.realtime,
            size=config.size,
            seed=config.seed,
            max_frames=synth_frames,
        )
    if isinstance(source, SyntheticSource) and source.max_frames is not None and max_frames is None:
        max_frames = source.max_frames
    if display is None and not config.headless:
        display = Display()  # no GUI here: say so before loading anything
    owns_segmenter = segmenter is None
    handed_over = False
    try:
        if segmenter is None:
            segmenter = open_segmenter(
                config.artifact,
                config.model,
                threshold=config.threshold,
                runtime=config.runtime,
                device=config.device,
                threads=config.threads,
                check_files=config.check_files,
                preprocessing=config.preprocessing,
            )
        source.open()  # fails here (no camera, unreadable file) before anything is written
        handed_over = True  # from here the loop's reader closes the source (and leaves a hung camera alone)
        return _loop(config, segmenter, source, display, max_frames, on_frame)
    finally:
        if not handed_over:
            source.close()
        if display is not None:
            display.close()
        if owns_segmenter and segmenter is not None:
            segmenter.runtime.close()


def _log_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _loop(
    config: DemoConfig, seg: Segmenter, source: Source, display: Any, max_frames: int | None, on_frame: Any
) -> Summary:
    desc = seg.describe()
    info = {**desc, "source": source.name, "mode": "live (newest frame)" if source.live else "every frame",
            "threads": seg.runtime.threads}
    reader = reader_for(source, lost_after_s=config.camera_timeout)
    try:
        outputs = Outputs(config.record, config.log, config.serve, fps=source.fps or 30.0,
                          title=f"{desc['model']} on {desc['runtime']}/{desc['device']}")
    except BaseException:
        reader.stop()
        raise
    if outputs.server is not None:
        _log_line(f"edgeseg demo: serving the overlay at {outputs.server.url}")
    state = LoopState(threshold=seg.threshold)
    hud = HudInfo(model=desc["model"], runtime=desc["runtime"], device=desc["device"], precision=desc["precision"],
                  threshold=state.threshold)
    step = FrameStep(seg, hud, Stabilizer() if config.stabilize else None, alpha=config.alpha)
    stats = Stats()
    shown_at: list[float] = []
    status, message = "completed", ""
    frames = 0
    last_annotated = None
    t_start, wall0 = time.perf_counter(), time.time()
    try:
        with stop_on_signals(state):
            # untimed, before capture starts (a live frame would wait for it): first-call set-up stays out of the figures
            step.warm_up(np.zeros((*seg.size, 3), np.uint8), state.threshold)
            reader.start()
            t_start, wall0 = time.perf_counter(), time.time()
            while max_frames is None or frames < max_frames:
                if state.stop_requested:
                    status, message = "interrupted", "stopped by Ctrl-C / SIGTERM"
                    break
                if state.paused and display is not None and last_annotated is not None:
                    apply_keys(display.show(last_annotated), state, last_annotated, config.snapshot_dir)
                    if state.quit:
                        status = "quit"
                        break
                    continue
                frame = reader.get()
                if frame is None:
                    break
                result = step(frame, frames, state.threshold, reader.dropped, t_start, wall0)
                t2 = time.perf_counter()
                outputs.show(result.annotated, step.stream_stats(result, frames + 1))  # recorded: counted
                frames += 1
                try:
                    if on_frame is not None:
                        on_frame(result)
                    last_annotated = result.annotated
                    if display is not None:
                        apply_keys(display.show(result.annotated), state, result.annotated, config.snapshot_dir)
                finally:  # the log line is written even when a second Ctrl-C stops the run here
                    t3 = time.perf_counter()
                    _finish_record(result, t2, t3, t_start, frame.t_capture)
                    outputs.write(result.record)
                ms = result.ms
                stats.add(read=ms["read"], pre=ms["pre"], infer=ms["infer"], post=ms["post"] + ms["stabilize"],
                          overlay=ms["overlay"], output=(t3 - t2) * 1e3, e2e=(t3 - frame.t_capture) * 1e3)
                shown_at.append(t3)
                if state.quit:
                    status = "quit"
                    break
    except SourceLost as exc:
        status, message = "source-lost", str(exc)
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped by Ctrl-C / SIGTERM"
    except WriteError as exc:  # a full device: the output cannot be completed, so the run stops here
        status, message = "error", str(exc)
    except Exception as exc:  # a runtime failing mid-stream: keep what was recorded, report it
        status, message = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        wall = time.perf_counter() - t_start
        reader.stop()
        written, failed = outputs.close()  # each output is finalised only when it is whole
        for err in failed:
            if str(err) not in message:  # not the error that stopped the loop already
                message = f"{message}; {err}" if message else str(err)
            status = "error"
        if state.snapshots:
            written["snapshots"] = ", ".join(state.snapshots)
    return Summary(status=status, frames=frames, captured=reader.captured, dropped=reader.captured - frames,
                   wall_s=wall, fps=frames / wall if wall > 0 else 0.0, latency_ms=stats.latency(),
                   stages_ms=stats.stages(), e2e_ms=stats.e2e(), interval_ms=intervals(shown_at), message=message,
                   info=info, outputs=written)


def _finish_record(result: FrameResult, t2: float, t3: float, t_start: float, t_capture: float) -> None:
    """The times known once the frame is shown: the output stage, when it was shown, capture to shown."""
    result.record.update(output_ms=round((t3 - t2) * 1e3, 3), t_shown=round(t3 - t_start, 6),
                         e2e_ms=round((t3 - t_capture) * 1e3, 3))


__all__ = ["DemoConfig", "EXIT_CODES", "THRESHOLD_STEP", "WINDOW", "Display", "FrameResult", "LatestFrameGrabber",
           "LoopState", "handle_key", "run_demo"]
