"""What the person at the demo controls: the keys, the window, and Ctrl-C / SIGTERM.

Keys (with a window): q / Esc quit, space pause, s snapshot, + / - threshold.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.apps.endoscopy import _cv
from edgeseg.runtimes.processing import write_image

WINDOW = "edgeseg demo"
THRESHOLD_STEP = 0.05


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
def stop_on_signals(state: LoopState) -> Iterator[None]:
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


def apply_keys(key: int, state: LoopState, annotated: np.ndarray, snapshot_dir: str | Path) -> None:
    """Apply a key press; ``s`` saves ``annotated`` (what is on screen) as a PNG in ``snapshot_dir``."""
    if handle_key(key, state) == "snapshot":
        path = (
            Path(snapshot_dir)
            / f"edgeseg-snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{len(state.snapshots)}.png"
        )
        write_image(path, annotated)
        state.snapshots.append(str(path))
        print(f"edgeseg demo: snapshot {path}", file=sys.stderr, flush=True)


__all__ = ["THRESHOLD_STEP", "WINDOW", "Display", "LoopState", "apply_keys", "handle_key", "stop_on_signals"]
