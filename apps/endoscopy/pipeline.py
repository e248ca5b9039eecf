"""The demo loop: newest frame -> segment -> overlay -> record / log / serve / show, until the source ends.

One frame at a time, in the caller's thread; only capture runs beside it (for live sources), so the shown
frame is the one the mask was computed on and the overlay lags the camera by at most one inference. Files
and the synthetic sequence are read synchronously unless ``realtime`` (see :mod:`edgeseg.apps.endoscopy.capture`).

Every way the loop can end (source finished, ``--max-frames``, q, Ctrl-C/SIGTERM, camera unplugged, a
runtime error mid-stream) goes through the same exit: recording and log are finalised, the summary says
what happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.apps.endoscopy import _cv
from edgeseg.apps.endoscopy.capture import (
    LatestFrameGrabber,
    Source,
    SourceLost,
    SyntheticSource,
    open_source,
    reader_for,
)
from edgeseg.apps.endoscopy.inference import Segmenter, open_segmenter
from edgeseg.apps.endoscopy.outputs import (
    CODECS,
    JsonlLog,
    Stats,
    Summary,
    VideoRecorder,
    clean_stale_outputs,
)
from edgeseg.apps.endoscopy.overlay import HudInfo, analyse_mask, render
from edgeseg.apps.endoscopy.serve import MjpegServer
from edgeseg.apps.endoscopy.stabilize import Stabilizer
from edgeseg.runtimes.processing import write_image

from edgeseg.common.io import WriteError

WINDOW = "edgeseg demo"
THRESHOLD_STEP = 0.05
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
        source: camera index, device path, video file or "synthetic".
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
        realtime: read files / the synthetic sequence as a live stream (paced, stale frames dropped).
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


@dataclass
class FrameResult:
    """What ``run_demo``'s ``on_frame`` callback receives for each processed frame."""

    frame: np.ndarray
    annotated: np.ndarray
    mask: np.ndarray
    record: dict[str, Any]


@dataclass
class LoopState:
    """What the keys change while the demo runs."""

    threshold: float
    paused: bool = False
    quit: bool = False
    stop_requested: bool = False
    snapshots: list[str] = field(default_factory=list)


def handle_key(key: int, state: LoopState) -> str | None:
    """Apply one key press: q/Esc quit, space pause, +/- threshold, s snapshot (returns "snapshot")."""
    if key < 0:
        return None
    ch = chr(key & 0xFF)
    if ch in ("q", "Q", "\x1b"):
        state.quit = True
    elif ch == " ":
        state.paused = not state.paused
    elif ch in ("+", "="):
        state.threshold = round(min(0.95, state.threshold + THRESHOLD_STEP), 2)
    elif ch in ("-", "_"):
        state.threshold = round(max(0.05, state.threshold - THRESHOLD_STEP), 2)
    elif ch in ("s", "S"):
        return "snapshot"
    return None


class Display:
    """An OpenCV window, when this OpenCV build and session can show one."""

    def __init__(self) -> None:
        cv2 = _cv.cv2()
        self.cv2 = cv2
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise ValueError(
                "no display here (DISPLAY is not set, e.g. over ssh): run with --headless "
                "(--record OUT.mp4 / --log OUT.jsonl) or watch with --serve PORT"
            )
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise ValueError(
                "this OpenCV has no GUI support (opencv-python-headless): run with --headless "
                "(--record / --log) or watch in a browser with --headless --serve PORT"
            ) from None

    def show(self, frame: np.ndarray) -> int:
        """Show an RGB frame; returns the key pressed (-1: none)."""
        self.cv2.imshow(WINDOW, self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2BGR))
        return int(self.cv2.waitKey(1))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cv2.destroyWindow(WINDOW)


@contextlib.contextmanager
def _stop_on_signals(state: LoopState) -> Iterator[None]:
    """Ctrl-C / SIGTERM (``timeout``, a closing ssh session, systemd) ask the loop to stop after the current
    frame, so the recording, the log and the counts stay consistent; a second signal stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _request_stop(signum: int, frame: Any) -> None:
        if state.stop_requested:
            raise KeyboardInterrupt
        state.stop_requested = True

    old = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _log_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
                runtime=config.runtime,
                device=config.device,
                threads=config.threads,
                threshold=config.threshold,
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


def _loop(
    config: DemoConfig, seg: Segmenter, source: Source, display: Any, max_frames: int | None, on_frame: Any
) -> Summary:
    desc = seg.describe()
    info = {
        **desc,
        "source": source.name,
        "mode": "live (newest frame)" if source.live else "every frame",
        "threads": seg.runtime.threads,
    }
    reader = reader_for(source, lost_after_s=config.camera_timeout)
    server = None
    try:
        if config.serve is not None:
            server = MjpegServer(config.serve, title=f"{desc['model']} on {desc['runtime']}/{desc['device']}")
            server.start()
            _log_line(f"edgeseg demo: serving the overlay at {server.url}")
        clean_stale_outputs(config.record, config.log)  # what killed runs left beside these outputs
        recorder = VideoRecorder(config.record, fps=source.fps or 30.0) if config.record else None
        log = JsonlLog(config.log) if config.log else None  # last: the only one that creates a file here
    except BaseException:
        if server is not None:
            server.close()
        reader.stop()
        raise
    state = LoopState(threshold=seg.threshold)
    hud = HudInfo(
        model=desc["model"],
        runtime=desc["runtime"],
        device=desc["device"],
        precision=desc["precision"],
        threshold=state.threshold,
    )
    stats = Stats()
    stabilizer = Stabilizer() if config.stabilize else None
    recent: deque[float] = deque(maxlen=30)
    status, message = "completed", ""
    frames = 0
    last_annotated: np.ndarray | None = None
    warm_s = 0.0
    t_start = time.perf_counter()
    wall0 = time.time()
    try:
        with _stop_on_signals(state):
            reader.start()
            t_start, wall0 = time.perf_counter(), time.time()
            while max_frames is None or frames < max_frames:
                if state.stop_requested:
                    status, message = "interrupted", "stopped by Ctrl-C / SIGTERM"
                    break
                if state.paused and display is not None and last_annotated is not None:
                    _keys(display.show(last_annotated), state, last_annotated, config)
                    if state.quit:
                        status = "quit"
                        break
                    continue
                frame = reader.get()
                if frame is None:
                    break
                if (
                    frames == 0
                ):  # untimed pass: OpenCV's and the runtime's first-call set-up stay out of the figures
                    tw = time.perf_counter()
                    first = seg(frame.image, threshold=state.threshold)
                    render(frame.image, first.mask, None, hud, alpha=config.alpha)
                    warm_s = time.perf_counter() - tw
                res = seg(frame.image, threshold=state.threshold)
                steady = stabilizer(res.mask) if stabilizer is not None else None
                shown = res.mask if steady is None else steady.mask
                t1 = time.perf_counter()
                mi = analyse_mask(shown)
                regions, area_pct = mi.regions, mi.area_pct
                recent.append(t1)
                fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                hud.fps, hud.infer_ms, hud.threshold = fps, res.infer_ms, state.threshold
                hud.polyps, hud.area_pct, hud.dropped = len(regions), area_pct, reader.dropped
                annotated = render(frame.image, shown, mi, hud, alpha=config.alpha)
                t2 = time.perf_counter()
                record = {
                    "frame": frames,
                    "source_frame": frame.index,
                    "timestamp": round(wall0 + (frame.t_capture - t_start), 6),
                    "t": round(frame.t_capture - t_start, 6),
                    "infer_ms": round(res.infer_ms, 3),
                    "pre_ms": round(res.pre_ms, 3),
                    "post_ms": round(res.post_ms, 3),
                    "mask_pixels": mi.pixels,
                    "mask_area_pct": round(area_pct, 3),
                    "polyps": len(regions),
                    "regions": [r.to_dict() for r in regions],
                    "threshold": state.threshold,
                    "dropped_total": reader.dropped,
                }
                if steady is not None:  # what the model saw vs what is shown
                    record.update(raw_polyps=steady.raw_regions, tracks=[t.id for t in steady.tracks],
                                  stabilize_ms=round(steady.ms, 3))
                if recorder is not None:
                    recorder.write(annotated)
                if log is not None:
                    log.write(record)
                frames += 1
                if server is not None:
                    server.publish(
                        annotated,
                        {
                            "frame": frames,
                            "fps": fps,
                            "infer_ms": res.infer_ms,
                            "polyps": len(regions),
                            "area_pct": area_pct,
                        },
                    )
                if on_frame is not None:
                    on_frame(FrameResult(frame.image, annotated, shown, record))
                last_annotated = annotated
                if display is not None:
                    _keys(display.show(annotated), state, annotated, config)
                t3 = time.perf_counter()
                stats.add(
                    read=frame.read_ms,
                    pre=res.pre_ms,
                    infer=res.infer_ms,
                    post=res.post_ms,
                    overlay=(t2 - t1) * 1e3,
                    output=(t3 - t2) * 1e3,
                )
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
        wall = time.perf_counter() - t_start - warm_s
        reader.stop()
        outputs = {}
        # each output is finalised only when it is whole; one that is not is removed and fails the run
        for name, out in (("recording", recorder), ("log", log)):
            if out is None:
                continue
            try:
                path = out.close()
            except WriteError as exc:
                if str(exc) not in message:  # not the error that stopped the loop already
                    message = f"{message}; {exc}" if message else str(exc)
                status = "error"
                continue
            if path is not None:
                count = f"{out.frames} frames" if name == "recording" else f"{out.records} records"
                outputs[name] = f"{path} ({count})"
        if server is not None:
            outputs["stream"] = server.url
            server.close()
        if state.snapshots:
            outputs["snapshots"] = ", ".join(state.snapshots)
    return Summary(
        status=status,
        frames=frames,
        captured=reader.captured,
        dropped=reader.captured - frames,
        wall_s=wall,
        fps=frames / wall if wall > 0 else 0.0,
        latency_ms=stats.latency(),
        stages_ms=stats.stages(),
        message=message,
        info=info,
        outputs=outputs,
    )


def _keys(key: int, state: LoopState, annotated: np.ndarray, config: DemoConfig) -> None:
    if handle_key(key, state) == "snapshot":
        path = (
            Path(config.snapshot_dir)
            / f"edgeseg-snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{len(state.snapshots)}.png"
        )
        write_image(path, annotated)
        state.snapshots.append(str(path))
        _log_line(f"edgeseg demo: snapshot {path}")


__all__ = ["DemoConfig", "EXIT_CODES", "LatestFrameGrabber", "LoopState", "handle_key", "run_demo"]
