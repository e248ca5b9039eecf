"""What the demo writes: the annotated video, the per-frame JSONL log, and the run summary.

Both files are written under a temporary name beside the destination and renamed into place when the run
ends, whether it ended normally, by the user, or because the source vanished: what was written so far is
finalised (a complete, decodable file), and a run killed outright leaves only a hidden temp file, never a
truncated file under the real name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from edgeseg.apps.endoscopy import _cv

from edgeseg.common.io import atomic_path

# container suffix -> FourCC that this OpenCV/FFmpeg build writes (see TOOLCHAIN.md)
CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG", ".mov": "mp4v"}


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
        except OSError as exc:
            raise ValueError(f"cannot write {self.dest} ({exc.strerror}); choose a writable path") from None

    def commit(self) -> Path:
        self._cm.__exit__(None, None, None)
        return self.dest

    def discard(self) -> None:
        exc = RuntimeError("discarded")
        self._cm.__exit__(RuntimeError, exc, None)


class VideoRecorder:
    """Annotated RGB frames -> a video file, opened on the first frame (its size), finalised atomically.

    Args:
        path: destination (.avi MJPG, .mp4 mp4v, .mkv, .mov).
        fps: the frame rate written in the container.
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
        self._file: _AtomicFile | None = None
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
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
        if (w, h) != self._size:
            frame = cv2.resize(frame, self._size)
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        """Finalise the container and move it into place; returns the path (None when nothing was written)."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        return self._file.commit() if self._file is not None else None

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._file is not None:
            self._file.discard()


class JsonlLog:
    """One JSON object per processed frame, finalised atomically on :meth:`close`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = _AtomicFile(self.path)
        self._fh: TextIO | None = open(self._file.tmp, "w", encoding="utf-8")  # noqa: SIM115
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise ValueError("the log is closed")
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.records += 1

    def close(self) -> Path | None:
        if self._fh is None:
            return None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        return self._file.commit()

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._file.discard()


STAGES = ("read", "pre", "infer", "post", "overlay", "output")


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
            warm-up pass on the first frame excluded).
        fps: end-to-end frames per second (``frames / wall_s``).
        latency_ms: inference latency mean / p50 / p90 / max.
        stages_ms: mean ms per frame of each stage (read, pre, infer, post, overlay, output).
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
        for k, v in self.outputs.items():
            lines.append(f"  {k:<10} {v}")
        return "\n".join(lines)


class Stats:
    """Per-frame stage timings, accumulated for the summary."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def add(self, **ms: float) -> None:
        self.rows.append(ms)

    def latency(self) -> dict[str, float]:
        if not self.rows:
            return {}
        a = np.asarray([r["infer"] for r in self.rows], np.float64)
        return {
            "mean": float(a.mean()),
            "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)),
            "max": float(a.max()),
        }

    def stages(self) -> dict[str, float]:
        if not self.rows:
            return {}
        return {k: float(np.mean([r.get(k, 0.0) for r in self.rows])) for k in STAGES}
