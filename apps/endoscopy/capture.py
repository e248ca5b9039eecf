"""Frame sources: a camera, a video file, a folder of frames (a clip) and the synthetic sequence.

Every source yields RGB ``uint8`` frames (as ``edgeseg.runtimes.processing`` takes them; OpenCV's BGR is converted
once at capture). Two ways of reading them:

* **Live** (a camera, or a file/folder/synthetic source with ``realtime=True``): a
  :class:`~edgeseg.apps.endoscopy.grabber.LatestFrameGrabber` thread reads continuously and keeps only the newest frame. The consumer always gets the newest frame;
  frames that arrive while it is busy replace the unread one and are counted as dropped, never queued, so
  the overlay lags the video by at most one inference.
* **Synchronous** (a file, a folder or the synthetic sequence, the default): the consumer reads frame after frame,
  so every frame is processed exactly once (deterministic counts for recordings, logs and tests).

A camera that stops delivering frames (unplugged) raises :class:`SourceLost` from the grabber; a source that
cannot be opened raises :class:`SourceError` with what to do. The readers live in
:mod:`edgeseg.apps.endoscopy.grabber`.
"""

from __future__ import annotations

import contextlib
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
        self._cap: Any = None
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


class FolderSource(Source):
    """A folder of frames played in order: a clip written by ``edgeseg.common.clips.write_clip`` (paced at its
    ``clip.json`` fps) or any folder of images (``frames/`` or the folder itself, natural order, 30 fps).

    Frames are decoded with ``edgeseg.common.images.read_image``; a clip's true masks are left to
    ``edgeseg evaluate --video``.
    """

    def __init__(self, path: str | Path, realtime: bool = False):
        super().__init__()
        self.path = Path(path)
        self.live = realtime
        self.name = f"{self.path.name}/ (frames)"
        self._clip: Any = None
        self._i = 0

    def _open(self) -> None:
        from edgeseg.common.clips import open_clip

        self._clip = open_clip(self.path)
        self.fps = self._clip.fps
        self.name = f"{self.path.name}/ ({len(self._clip)} frames at {self.fps:g} fps)"
        self._i = 0

    def _read(self) -> np.ndarray | None:
        from edgeseg.common.images import read_image

        if self._i >= len(self._clip):
            return None
        try:
            frame = read_image(self._clip.frames[self._i])
        except (ValueError, FileNotFoundError) as exc:  # a frame removed or damaged mid-run
            raise SourceError(f"{exc}; the clip {self.path} is damaged, write it again") from None
        self._i += 1
        return frame


def open_source(
    spec: str | int, *, realtime: bool = False, size: int = 256, seed: int = 0, max_frames: int | None = None
) -> Source:
    """A :class:`Source` from a ``--source`` value.

    Args:
        spec: camera index (``0``), device path (``/dev/video0``), video file, folder of frames (a clip), or
            ``synthetic``.
        realtime: read a file, a folder or the synthetic sequence as a live stream (paced, newest frame wins).
        size: frame size of the synthetic sequence.
        seed: seed of the synthetic sequence.
        max_frames: length of the synthetic sequence (None: endless).

    Raises:
        FileNotFoundError: a file or folder that does not exist, or a folder without frames.
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
            "(/dev/video0), a video file, a folder of frames or 'synthetic'"
        )
    if path.is_dir():
        from edgeseg.common.clips import is_clip_folder

        if not is_clip_folder(path):
            raise FileNotFoundError(f"--source {s!r}: no frames in this folder; give a clip folder (clip.json + "
                                    "frames/) or a folder of .png/.jpg frames")
        return FolderSource(path, realtime=realtime)
    return VideoFileSource(path, realtime=realtime)


_MOVED = ("LatestFrameGrabber", "SyncReader", "reader_for")


def __getattr__(name: str) -> Any:  # the readers moved to grabber.py; old imports keep working
    if name in _MOVED:
        from edgeseg.apps.endoscopy import grabber

        return getattr(grabber, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
