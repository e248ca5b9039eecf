from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KVASIR = Path(os.environ.get("EDGESEG_KVASIR", REPO.parent / "shared" / "data" / "kvasir-seg-256"))


@pytest.fixture(scope="session")
def kvasir_root() -> Path:
    """The real Kvasir-SEG copy beside the repo; tests using it skip cleanly when it is absent."""
    if not (KVASIR / "images").is_dir():
        pytest.skip(f"Kvasir-SEG not found at {KVASIR} (set EDGESEG_KVASIR)")
    return KVASIR


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Keep the suite predictable on 2-core CI machines.
    try:
        import torch

        torch.set_num_threads(min(2, os.cpu_count() or 1))
    except ImportError:
        pass
    yield


def tail_losing_writer(real, keep: float):
    """A stand-in for ``cv2.VideoWriter`` (``real``) whose last writes never reach the device: on release the
    file is cut to ``keep`` of its size, while its header still promises every frame."""

    class LosesTheTail:
        def __init__(self, path, *args):
            self.path, self.w = path, real(path, *args)

        def isOpened(self):
            return self.w.isOpened()

        def write(self, frame):
            self.w.write(frame)

        def release(self):
            self.w.release()
            os.truncate(self.path, int(os.path.getsize(self.path) * keep))

    return LosesTheTail
