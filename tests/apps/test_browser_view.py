"""The MJPEG browser view (`edgeseg demo --serve PORT`) in a real browser engine: the page loads, frames arrive.

The engine, in this order:

1. a ``chromium`` / ``chromium-browser`` / ``google-chrome`` binary on PATH: ``--headless --screenshot`` and
   ``--dump-dom`` (the stats line the page's script fills in);
2. else Qt WebEngine (Chromium inside Qt) when PyQt6-WebEngine imports (``EDGESEG_QT_PATH`` may name the folder
   it was installed to: ``pip install --target /tmp/qtweb PyQt6 PyQt6-WebEngine``): tests/apps/qt_browser.py
   reads the stream's pixels back through a canvas several times, and takes a screenshot;
3. else the test is skipped, saying which engines were looked for.

Slow (a browser starts in seconds): run with ``-m slow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

BINARIES = ("chromium", "chromium-browser", "google-chrome")
ARTIFACT = REPO / "runtimes" / "artifacts" / "ultralightunet-s_fp32.onnx"


def _qt_env() -> dict[str, str] | None:
    env = dict(os.environ)
    code = "import PyQt6.QtWebEngineWidgets"
    if env.get("EDGESEG_QT_PATH"):
        code = f"import sys; sys.path.insert(0, {env['EDGESEG_QT_PATH']!r}); " + code
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
    return env if ok else None


def _serving_demo(log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeseg", "demo", "--artifact", str(ARTIFACT), "--source", "synthetic", "--realtime",
         "--headless", "--serve", "0", "--threads", "1", "--log", str(log)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    url = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if not url:
        proc.kill()
        raise AssertionError(f"the demo did not say where it serves: {line!r}")
    return proc, url.group(1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def _drawn(png: Path) -> float:
    """Share of the screenshot that is not the page's dark background (the stream and its text)."""
    img = cv2.imread(str(png))
    assert img is not None, png
    return float((np.abs(img.astype(int) - (17, 17, 17)).sum(axis=2) > 60).mean())


@pytest.mark.slow
def test_the_browser_view_shows_frames_as_they_arrive(tmp_path):
    binary = next((shutil.which(b) for b in BINARIES if shutil.which(b)), None)
    qt = None if binary else _qt_env()
    if binary is None and qt is None:
        pytest.skip(f"no browser engine: none of {', '.join(BINARIES)} on PATH, and PyQt6-WebEngine does not import "
                    "(pip install --target DIR PyQt6 PyQt6-WebEngine, then EDGESEG_QT_PATH=DIR)")
    log = tmp_path / "serve.jsonl"
    proc, url = _serving_demo(log)
    shot = tmp_path / "view.png"
    try:
        if binary is not None:
            flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=560,420",
                     "--virtual-time-budget=4000"]
            subprocess.run([binary, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=90)
            dom = subprocess.run([binary, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
            stats = re.search(r'<div id="stats">frame (\d+)', dom.stdout)
            assert stats and int(stats.group(1)) >= 1, dom.stdout[-500:]
        else:
            res = subprocess.run([sys.executable, str(REPO / "tests" / "apps" / "qt_browser.py"), url, str(shot), "4"],
                                 capture_output=True, text=True, timeout=120, env=qt)
            assert res.returncode == 0, res.stderr[-2000:]
            probes = json.loads(res.stdout.strip().splitlines()[-1])["probes"]
            assert all((p["w"], p["h"]) == (256, 256) for p in probes), probes  # the stream's frames, decoded
            assert len({p["hash"] for p in probes}) >= 3, probes  # new frames keep arriving
            shown = [int(re.match(r"frame (\d+)", p["stats"]).group(1)) for p in probes]
            assert shown == sorted(shown) and shown[-1] > shown[0], shown
    finally:
        _stop(proc)
    assert shot.is_file() and _drawn(shot) > 0.2  # the overlay is on the page, not a blank one
    assert len(log.read_text().splitlines()) >= 30  # the demo kept running while the browser watched
