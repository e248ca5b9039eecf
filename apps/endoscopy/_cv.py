"""OpenCV, imported on first use with a message that names the extra to install."""

from __future__ import annotations

from typing import Any


def cv2() -> Any:
    """The ``cv2`` module (``pip install 'edgeseg[app]'`` when missing)."""
    from edgeseg.common.deps import require

    return require("cv2", "the endoscopy demo")
