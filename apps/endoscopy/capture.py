"""Frame sources (camera, video file, synthetic sequence) and the latest-frame capture thread.

Every source yields RGB ``uint8`` frames (as ``edgeseg.runtimes.processing`` takes them; OpenCV's BGR is converted
once at capture). Two ways of reading them:

* **Live** (a camera, or a file/synthetic source with ``realtime=True``): a :class:`LatestFrameGrabber`
  thread reads continuously and keeps only the newest frame. The consumer always gets the newest frame;
  frames that arrive while it is busy replace the unread one and are counted as dropped, never queued, so
  the overlay lags the video by at most one inference.
* **Synchronous** (a file or the synthetic sequence, the default): the consumer reads frame after frame,
  so every frame is processed exactly once (deterministic counts for recordings, logs and tests).

A camera that stops delivering frames (unplugged) raises :class:`SourceLost` from the grabber; a source that
cannot be opened raises :class:`SourceError` with what to do.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.apps.endoscopy import _cv

SYNTHETIC = "synthetic"


class SourceError(ValueError):
    """A source cannot be opened or decoded (no camera, unreadable video); the message says what to do."""


class SourceLost(RuntimeError):
    """A live source stopped delivering frames mid-stream (camera unplugged)."""


@dataclass
class Frame:
    """One captured frame.

    Attributes:
        image: RGB uint8 (H, W, 3).
        index: position in the source's stream (0-based; gaps are dropped frames in live mode).
        t_capture: ``time.perf_counter()`` when the frame was read.
        read_ms: time the source took to deliver it (decode/grab).
    """

    image: np.ndarray
    index: int
    t_capture: float
    read_ms: float


class Source:
    """A stream of RGB uint8 frames; subclasses implement ``_open``, ``_read`` and ``_close``.

    Attributes:
        name: what the stream is (for the HUD, logs and messages).
        live: read through the latest-frame thread (a real camera always is).
        fps: the nominal frame rate (None when unknown); realtime file/synthetic sources are paced at it.
        finite: ``read()`` returning None means the stream has ended normally (a file); for a camera
            (``finite=False``) it means no frame yet, and a long silence means the camera is gone.
    """

    name = "source"
    live = False
    finite = True
    fps: float | None = None

    def __init__(self) -> None:
        self.opened = False

    def open(self) -> Source:
        if not self.opened:
            self._open()
            self.opened = True
        return self

    def read(self) -> np.ndarray | None:
        """The next frame, or None when the stream has ended or failed."""
        if not self.opened:
            self.open()
        return self._read()

    def close(self) -> None:
        if self.opened:
            self._close()
            self.opened = False

    def __enter__(self) -> Source:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        pass

    def _read(self) -> np.ndarray | None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class _CaptureSource(Source):
    """Common code of the OpenCV ``VideoCapture`` sources."""

    def __init__(self) -> None:
        super().__init__()
        self._cap = None
        self._first: np.ndarray | None = None

    def _read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        ok, frame = self._cap.read()
        return _to_rgb(frame) if ok and frame is not None else None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _probe(self, what: str) -> None:
        """Read the first frame now so that an unreadable stream fails at open, with a clear message."""
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._close()
            raise SourceError(what)
        self._first = _to_rgb(frame)
        fps = float(self._cap.get(_cv.cv2().CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None


@contextlib.contextmanager
def _quiet_opencv(cv2: Any) -> Iterator[None]:
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        log.setLogLevel(old)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or grey) as RGB uint8."""
    cv2 = _cv.cv2()
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class CameraSource(_CaptureSource):
    """A camera by index (``0``) or device path (``/dev/video0``); always live."""

    live = True
    finite = False

    def __init__(self, device: int | str):
        super().__init__()
        self.device = device
        self.name = f"camera {device}"

    def _open(self) -> None:
        cv2 = _cv.cv2()
        if isinstance(self.device, str) and not Path(self.device).exists():
            raise SourceError(
                f"no camera at {self.device} (the device does not exist); check the cable and "
                "`ls /dev/video*`, or use --source FILE.mp4 / --source synthetic"
            )
        with _quiet_opencv(cv2):  # OpenCV's own WARN lines would bury the one-line message below
            self._cap = cv2.VideoCapture(self.device)
        if not self._cap.isOpened():
            self._close()
            raise SourceError(
                f"cannot open camera {self.device} (not connected, busy or no permission); check "
                "`ls /dev/video*` and the video group, or use --source FILE.mp4 / --source synthetic"
            )
        self._probe(f"camera {self.device} opened but delivered no frame; is it in use by another program?")


class VideoFileSource(_CaptureSource):
    """A video file decoded with OpenCV/FFmpeg; synchronous unless ``realtime`` (then paced at its fps)."""

    def __init__(self, path: str | Path, realtime: bool = False):
        super().__init__()
        self.path = Path(path)
        self.live = realtime
        self.name = self.path.name

    def _open(self) -> None:
        cv2 = _cv.cv2()
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        # one decoding thread: small clips decode in ~0.2 ms, and FFmpeg's frame threads would compete
        # with the inference runtime's worker threads for the same cores (measured: 7 ms/frame vs 0.2)
        self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
        if not self._cap.isOpened():
            self._close()
            raise SourceError(
                f"cannot read video {self.path}: OpenCV/FFmpeg does not recognise it (corrupt or "
                "unsupported codec); re-encode it, e.g. `ffmpeg -i IN -c:v mjpeg OUT.avi`"
            )
        self._probe(
            f"cannot decode video {self.path}: it opens but holds no readable frame (corrupt, empty "
            "or unsupported codec); re-encode it, e.g. `ffmpeg -i IN -c:v mjpeg OUT.avi`"
        )


class SyntheticSource(Source):
    """The synthetic endoscopy sequence (a moving polyp phantom) from ``edgeseg.common.phantoms``.

    ``distinct`` frames are rendered once at open (rendering costs ~20 ms a frame at 256x256, more than a
    frame period) and played forward and backward, so the loop has no jump. The stream is endless unless
    ``max_frames`` is set.

    Args:
        size: frame size (H, W) or one int.
        seed: the sequence's seed.
        distinct: frames rendered before the ping-pong loop.
        max_frames: stop after this many frames (None: endless).
        realtime: live mode (through the latest-frame thread, paced at ``fps``).
        fps: the nominal frame rate.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 256,
        seed: int = 0,
        distinct: int = 60,
        max_frames: int | None = None,
        realtime: bool = False,
        fps: float = 30.0,
    ):
        super().__init__()
        if distinct < 1:
            raise ValueError(f"distinct must be >= 1, got {distinct}")
        self.size, self.seed, self.distinct, self.max_frames = size, seed, distinct, max_frames
        self.live = realtime
        self.fps = fps
        self.name = f"synthetic (seed {seed})"
        self._frames: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self._i = 0

    def _open(self) -> None:
        from edgeseg.common.phantoms import synthetic_sequence

        for rgb, mask in synthetic_sequence(self.distinct, self.size, seed=self.seed):
            self._frames.append(rgb)
            self.masks.append(mask)
        self._i = 0

    def position(self, i: int) -> int:
        """Which rendered frame the stream shows at step ``i`` (forward then backward)."""
        n = len(self._frames)
        if n == 1:
            return 0
        period = 2 * n - 2
        k = i % period
        return k if k < n else period - k

    def _read(self) -> np.ndarray | None:
        if self.max_frames is not None and self._i >= self.max_frames:
            return None
        frame = self._frames[self.position(self._i)]
        self._i += 1
        return frame.copy()


def open_source(
    spec: str | int, *, realtime: bool = False, size: int = 256, seed: int = 0, max_frames: int | None = None
) -> Source:
    """A :class:`Source` from a ``--source`` value.

    Args:
        spec: camera index (``0``), device path (``/dev/video0``), video file, or ``synthetic``.
        realtime: read a file or the synthetic sequence as a live stream (paced, newest frame wins).
        size: frame size of the synthetic sequence.
        seed: seed of the synthetic sequence.
        max_frames: length of the synthetic sequence (None: endless).

    Raises:
        FileNotFoundError: a file that does not exist.
    """
    s = str(spec).strip()
    if s == SYNTHETIC:
        return SyntheticSource(size=size, seed=seed, max_frames=max_frames, realtime=realtime)
    if s.isdigit():
        return CameraSource(int(s))
    if s.startswith("/dev/"):
        return CameraSource(s)
    path = Path(s)
    if not path.exists():
        raise FileNotFoundError(
            f"--source {s!r}: no such file; give a camera index (0), a device path "
            "(/dev/video0), a video file or 'synthetic'"
        )
    return VideoFileSource(path, realtime=realtime)


def _lost_message(source: Source, after_s: float, frames: int) -> str:
    return (
        f"{source.name} stopped delivering frames: none for {after_s:g} s after {frames} frames (unplugged?)"
    )


class LatestFrameGrabber:
    """Reads a source in its own thread and keeps only the newest frame.

    ``get()`` returns the newest frame not yet consumed; frames replaced before anyone read them are counted
    in ``dropped``. A live source that delivers nothing for ``lost_after_s`` seconds is declared lost
    (``get`` raises :class:`SourceLost`); a finite source (file, synthetic) that returns None has ended.

    Args:
        source: an opened or unopened :class:`Source`.
        lost_after_s: how long a camera may fail to deliver before it counts as unplugged.
        pace: sleep to the source's ``fps`` between reads (default: for finite sources, i.e. files and the
            synthetic stream in realtime mode; a camera paces itself).
    """

    def __init__(self, source: Source, lost_after_s: float = 2.0, pace: bool | None = None):
        self.source = source
        self.lost_after_s = lost_after_s
        self.pace = source.finite if pace is None else pace
        self.captured = 0
        self.dropped = 0
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ended = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edgeseg-capture", daemon=True)

    def start(self) -> LatestFrameGrabber:
        self.source.open()
        self._thread.start()
        return self

    def _run(self) -> None:
        period = 1.0 / self.source.fps if self.pace and self.source.fps else 0.0
        next_t = time.perf_counter()
        last_ok = time.perf_counter()
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                image = self.source.read()
                t1 = time.perf_counter()
                if image is None:
                    if self.source.finite:
                        break  # a file or a finite synthetic stream has ended
                    if t1 - last_ok > self.lost_after_s:
                        raise SourceLost(_lost_message(self.source, self.lost_after_s, self.captured))
                    time.sleep(0.01)
                    continue
                last_ok = t1
                frame = Frame(image, self.captured, t1, (t1 - t0) * 1e3)
                self.captured += 1
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = frame
                    self._cond.notify_all()
                if period:
                    next_t += period
                    delay = next_t - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_t = time.perf_counter()
        except BaseException as exc:  # hand any capture failure to the consumer
            self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest unread frame; None when the stream has ended (or ``timeout`` passed with no frame).

        For a camera (``finite=False``) the wait is bounded by ``lost_after_s`` even when the capture thread
        is stuck inside a blocking ``read()`` (some drivers block for seconds when the device vanishes).

        Raises:
            SourceLost: the camera stopped delivering frames.
        """
        if not self.source.finite:
            timeout = self.lost_after_s if timeout is None else min(timeout, self.lost_after_s)
        with self._cond:
            deadline = None if timeout is None else time.perf_counter() + timeout
            while self._slot is None and not self._ended:
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    if not self.source.finite:
                        raise SourceLost(_lost_message(self.source, self.lost_after_s, self.captured))
                    return None
                self._cond.wait(left)
            frame, self._slot = self._slot, None
            if frame is not None:
                return frame
            if self._error is not None:
                if isinstance(self._error, SourceLost):
                    raise self._error
                raise SourceLost(f"{self.source.name} failed: {type(self._error).__name__}: {self._error}")
            return None

    def stop(self, join_s: float = 1.0) -> None:
        """Stop the thread and close the source (idempotent).

        A thread stuck in a blocking ``read()`` is left to die with the process (it is a daemon) and the
        source is then not released from under it.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=join_s)
        with self._cond:  # a frame captured but never taken counts as dropped: captured = taken + dropped
            if self._slot is not None:
                self._slot = None
                self.dropped += 1
        if not self._thread.is_alive():
            self.source.close()

    def __enter__(self) -> LatestFrameGrabber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyncReader:
    """Reads a non-live source frame by frame in the caller's thread (every frame, no drops)."""

    def __init__(self, source: Source):
        self.source = source
        self.captured = 0
        self.dropped = 0

    def start(self) -> SyncReader:
        self.source.open()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        t0 = time.perf_counter()
        image = self.source.read()
        t1 = time.perf_counter()
        if image is None:
            return None
        frame = Frame(image, self.captured, t1, (t1 - t0) * 1e3)
        self.captured += 1
        return frame

    def stop(self) -> None:
        self.source.close()


def reader_for(source: Source, lost_after_s: float = 2.0) -> LatestFrameGrabber | SyncReader:
    """The latest-frame thread for a live source, the synchronous reader otherwise."""
    return LatestFrameGrabber(source, lost_after_s=lost_after_s) if source.live else SyncReader(source)
