"""Reading a source: the latest-frame capture thread (live) and the frame-by-frame reader (files, clips).

See :mod:`edgeseg.apps.endoscopy.capture` for the two ways a source is read and why.
"""

from __future__ import annotations

import threading
import time

from edgeseg.apps.endoscopy.capture import Frame, Source, SourceLost


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
