"""What the demo writes: the annotated video, the per-frame JSONL log, the MJPEG stream, and the run summary.

Both files are written under a temporary name beside the destination and renamed into place when the run
ends, whether it ended normally, by the user, or because the source vanished: what was written so far is
finalised (a complete, decodable file), and a run killed outright leaves only a hidden temp file, never a
truncated file under the real name.

Every write is checked. OpenCV's ``VideoWriter`` reports nothing when the device fills up, so the recorder
watches the free space after each frame, and before the file is renamed into place it is read back: it must
hold every frame written (the container's count, and the last frame decodes). A recording that cannot be
completed is removed and reported as a :class:`~edgeseg.common.io.WriteError` ("no space left on device
writing X"), never kept short under its real name.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from edgeseg.apps.endoscopy import _cv
from edgeseg.apps.endoscopy.serve import MjpegServer
from edgeseg.apps.endoscopy.timing import STAGES, Stats
from edgeseg.runtimes.processing import frames_in_video

from edgeseg.common.io import LOW_SPACE_BYTES, WriteError, atomic_path, clean_stale, free_bytes, write_error

# container suffix -> FourCC that this OpenCV/FFmpeg build writes (see TOOLCHAIN.md)
CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG", ".mov": "mp4v"}


def clean_stale_outputs(*paths: str | Path | None) -> list[Path]:
    """Remove the hidden temporaries (``.NAME.XXXX.SUF``) that killed runs left beside these outputs, once
    they are old enough not to belong to a live run (:func:`edgeseg.common.io.clean_stale`)."""
    removed: list[Path] = []
    for p in paths:
        if p is not None:
            p = Path(p)
            removed += clean_stale(p.parent, (f".{p.name}.*",))
    return removed


class _AtomicFile:
    """:func:`edgeseg.common.io.atomic_path` held open across a run: a temp path beside ``dest`` that becomes
    ``dest`` on :meth:`commit` or disappears on :meth:`discard`."""

    def __init__(self, dest: str | Path):
        self.dest = Path(dest)
        if self.dest.is_dir():
            raise ValueError(f"{self.dest} is a folder; give a file name")
        self._cm = atomic_path(self.dest)
        try:
            self.tmp = self._cm.__enter__()
        except WriteError:
            raise
        except OSError as exc:
            raise ValueError(f"cannot write {self.dest} ({exc.strerror}); choose a writable path") from None

    def commit(self) -> Path:
        self._cm.__exit__(None, None, None)
        return self.dest

    def discard(self) -> None:
        """Remove the temp file (idempotent)."""
        if self.tmp.exists():
            exc = RuntimeError("discarded")
            self._cm.__exit__(RuntimeError, exc, None)


class VideoRecorder:
    """Annotated RGB frames -> a video file, opened on the first frame (its size), finalised atomically.

    Args:
        path: destination (.avi MJPG, .mp4 mp4v, .mkv, .mov).
        fps: the frame rate written in the container.

    Raises (from :meth:`write` and :meth:`close`):
        WriteError: the device filled up, or the finished file does not hold every frame written; the partial
            file is removed.
    """

    def __init__(self, path: str | Path, fps: float = 30.0):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CODECS:
            raise ValueError(
                f"--record {self.path}: unsupported container {suffix or '(none)'}; use one of "
                f"{', '.join(CODECS)}"
            )
        if not fps or fps <= 0:
            raise ValueError(f"recording fps must be positive, got {fps}")
        self.fps = float(fps)
        self.fourcc = CODECS[suffix]
        self.frames = 0
        self.failed: WriteError | None = None
        self._file: _AtomicFile | None = None
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        if self.failed is not None:
            raise self.failed
        cv2 = _cv.cv2()
        h, w = frame.shape[:2]
        if self._writer is None:
            self._file = _AtomicFile(self.path)
            self._writer = cv2.VideoWriter(
                str(self._file.tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                self._writer = None
                self._file.discard()
                raise ValueError(
                    f"cannot write {self.path} with codec {self.fourcc} (this OpenCV/FFmpeg build "
                    "lacks it); record to .avi (MJPG) instead"
                )
            self._size = (w, h)
        # VideoWriter.write returns nothing and raises nothing on a full device: look at the device instead
        free = free_bytes(self._file.tmp) if self._file is not None else None
        if free is not None and free < LOW_SPACE_BYTES:
            raise self._fail(f"{free} bytes free after {self.frames} frames")
        if (w, h) != self._size:
            frame = cv2.resize(frame, self._size)
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def _fail(self, why: str) -> WriteError:
        """Remove the partial file; the error that says why (kept: every later call raises it)."""
        self.failed = WriteError(errno.ENOSPC, f"no space left on device writing {self.path} ({why}; the "
                                 "recording was not kept); free some space (or record elsewhere) and run again")
        self.discard()
        return self.failed

    def close(self) -> Path | None:
        """Finalise the container, check it holds every frame written, and move it into place; returns the
        path (None when nothing was written).

        Raises:
            WriteError: the file is short (a full device, a failing writer): it is removed, not renamed.
        """
        if self.failed is not None:
            raise self.failed
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        if self._file is None:
            return None
        held = frames_in_video(self._file.tmp, self.frames)
        if held != self.frames:
            free = free_bytes(self._file.tmp)
            if free is not None and free < LOW_SPACE_BYTES:
                raise self._fail(f"the file holds {held} of the {self.frames} frames written")
            self.failed = WriteError(errno.EIO, f"the recording {self.path} holds {held} of the {self.frames} "
                                     "frames written (the video writer failed without a word); it was not kept")
            self.discard()
            raise self.failed
        try:
            return self._file.commit()
        except OSError as exc:
            self.failed = write_error(exc, self.path) or WriteError(exc.errno or errno.EIO,
                                                                    f"cannot finish {self.path} ({exc})")
            raise self.failed from None

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._file is not None:
            self._file.discard()
            self._file = None


class JsonlLog:
    """One JSON object per processed frame, finalised atomically on :meth:`close` (every write checked: a full
    device raises :class:`~edgeseg.common.io.WriteError` and the partial log is removed)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = _AtomicFile(self.path)
        self._fh: TextIO | None = open(self._file.tmp, "w", encoding="utf-8")  # noqa: SIM115
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise ValueError("the log is closed")
        try:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:
            self._failed(exc)
        self.records += 1

    def close(self) -> Path | None:
        if self._fh is None:
            return None
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as exc:
            self._failed(exc)
        self._fh = None
        return self._file.commit()

    def _failed(self, exc: OSError) -> None:
        self.discard()
        raise write_error(exc, self.path) or exc

    def discard(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass  # the buffered tail cannot be written: the file goes anyway
            self._fh = None
        self._file.discard()


@dataclass
class Summary:
    """The outcome of one demo run.

    Attributes:
        status: "completed" (source ended or --max-frames reached), "quit" (q key), "interrupted"
            (Ctrl-C / SIGTERM), "source-lost" (camera vanished), "error" (inference failed mid-run).
        frames: frames processed (= logged = recorded).
        captured: frames read from the source (live mode: including dropped ones).
        dropped: captured frames that were not processed (``captured - frames``): in live mode the stale ones
            the latest-frame thread replaced, plus, in any mode, a frame in flight when the run was stopped.
        wall_s: seconds from the first frame request to the end of the loop (model load and the untimed
            warm-up pass before it excluded).
        fps: end-to-end frames per second (``frames / wall_s``).
        latency_ms: inference latency mean / p50 / p90 / max.
        stages_ms: mean ms per frame of each stage (read, pre, infer, post (with the stabiliser), overlay,
            output).
        e2e_ms: capture-to-shown time p50 / p90 / p99 / mean / max (see :mod:`edgeseg.apps.endoscopy.timing`).
        interval_ms: the intervals between shown frames: percentiles and ``jitter`` (standard deviation).
        message: why the run stopped, when not "completed".
        info: model, runtime, device, precision, source.
        outputs: paths written.
    """

    status: str
    frames: int
    captured: int
    dropped: int
    wall_s: float
    fps: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    stages_ms: dict[str, float] = field(default_factory=dict)
    e2e_ms: dict[str, float] = field(default_factory=dict)
    interval_ms: dict[str, float] = field(default_factory=dict)
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        i = self.info
        lines = [
            f"edgeseg demo: {self.status}" + (f" ({self.message})" if self.message else ""),
            f"  model      {i.get('model')}  [{i.get('runtime')} / {i.get('device')} / {i.get('precision')}]",
            f"  source     {i.get('source')}",
            f"  frames     {self.frames} processed, {self.captured} captured, {self.dropped} dropped",
            f"  FPS        {self.fps:.1f} end-to-end over {self.wall_s:.2f} s",
        ]
        if self.latency_ms:
            lat = self.latency_ms
            lines.append(
                f"  inference  mean {lat['mean']:.2f} ms  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  "
                f"max {lat['max']:.2f}"
            )
        if self.stages_ms:
            parts = "  ".join(f"{k} {v:.2f}" for k, v in self.stages_ms.items())
            lines.append(f"  per frame  {parts} ms (mean)")
        if self.e2e_ms:
            e, iv = self.e2e_ms, self.interval_ms
            jitter = f"; frame interval p50 {iv['p50']:.2f}, jitter {iv['jitter']:.2f} ms" if iv else ""
            lines.append(f"  end to end capture->shown p50 {e['p50']:.2f}  p90 {e['p90']:.2f}  p99 {e['p99']:.2f} ms"
                         + jitter)
        for k, v in self.outputs.items():
            lines.append(f"  {k:<10} {v}")
        return "\n".join(lines)


class Outputs:
    """Where every shown frame goes: the recording, the MJPEG stream and the log, opened and finalised together.

    The log is opened last (it is the one output that creates its file at once), so a failure to open any
    of them leaves nothing behind. :meth:`close` finalises each output only when it is whole.

    Args:
        record: annotated video path (None: no recording).
        log: per-frame JSONL path (None: no log).
        serve: MJPEG port (None: no stream).
        fps: the recording's frame rate.
        title: the stream page's title.
    """

    def __init__(self, record: str | Path | None = None, log: str | Path | None = None, serve: int | None = None,
                 fps: float = 30.0, title: str = ""):
        self.recorder: VideoRecorder | None = None
        self.log: JsonlLog | None = None
        self.server: MjpegServer | None = None
        try:
            if serve is not None:
                self.server = MjpegServer(serve, title=title).start()
            clean_stale_outputs(record, log)  # what killed runs left beside these outputs
            self.recorder = VideoRecorder(record, fps=fps) if record else None
            self.log = JsonlLog(log) if log else None
        except BaseException:
            if self.server is not None:
                self.server.close()
            raise

    def show(self, annotated: np.ndarray, stats: dict[str, Any]) -> None:
        """Record and stream one annotated frame (the log line is written apart, once its times are known).

        Raises:
            WriteError: the recording cannot be completed (a full device).
        """
        if self.recorder is not None:
            self.recorder.write(annotated)
        if self.server is not None:
            self.server.publish(annotated, stats)

    def write(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)

    def close(self) -> tuple[dict[str, str], list[WriteError]]:
        """Finalise every output: (what was written, name -> path with its count; the outputs that could not be
        completed, removed, with why)."""
        written: dict[str, str] = {}
        failed: list[WriteError] = []
        outs: tuple[tuple[str, VideoRecorder | JsonlLog | None], ...] = (("recording", self.recorder), ("log", self.log))
        for name, out in outs:
            if out is None:
                continue
            try:
                path = out.close()
            except WriteError as exc:
                failed.append(exc)
                continue
            if path is not None:
                count = f"{out.frames} frames" if isinstance(out, VideoRecorder) else f"{out.records} records"
                written[name] = f"{path} ({count})"
        if self.server is not None:
            written["stream"] = self.server.url
            self.server.close()
        return written, failed


__all__ = ["CODECS", "STAGES", "JsonlLog", "Outputs", "Stats", "Summary", "VideoRecorder", "clean_stale_outputs"]
