"""Open a page in Qt WebEngine (Chromium inside Qt) off screen and report what its first <img> shows over time.

The browser half of tests/apps/test_browser_view.py, run as its own process (a Qt application must own its
main thread). Prints one JSON object: the probes (the image's size, a hash of its pixels read back through a
canvas, the page's stats line) and the screenshot's path.

usage: python tests/apps/qt_browser.py URL OUT.png [PROBES]
PyQt6 and PyQt6-WebEngine must be importable; EDGESEG_QT_PATH adds a folder to sys.path first (e.g. one made
with `pip install --target /tmp/qtweb PyQt6 PyQt6-WebEngine`).
"""

from __future__ import annotations

import json
import os
import sys

PROBE = """(() => {
  const img = document.images[0];
  if (!img || !img.naturalWidth) return JSON.stringify({w: 0, h: 0, hash: 0, stats: ''});
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
  return JSON.stringify({w: img.naturalWidth, h: img.naturalHeight, hash: h,
                         stats: document.getElementById('stats').textContent});
})()"""


def main(url: str, out: str, probes: int = 4) -> int:
    if os.environ.get("EDGESEG_QT_PATH"):
        sys.path.insert(0, os.environ["EDGESEG_QT_PATH"])
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    from PyQt6.QtCore import QTimer, QUrl
    from PyQt6.QtWebEngineWidgets import QWebEngineView
    from PyQt6.QtWidgets import QApplication

    app = QApplication(["edgeseg-browser-test"])
    view = QWebEngineView()
    view.resize(580, 640)
    view.load(QUrl(url))
    view.show()
    samples: list[dict] = []

    def probe() -> None:
        view.page().runJavaScript(PROBE, taken)

    def taken(result: str) -> None:
        samples.append(json.loads(result) if result else {})
        if len(samples) < probes:
            QTimer.singleShot(700, probe)
        else:
            view.grab().save(out)
            app.quit()

    QTimer.singleShot(2500, probe)  # the page, its first frame and the first stats poll
    QTimer.singleShot(60000, app.quit)  # never hang a test run
    app.exec()
    print(json.dumps({"probes": samples, "screenshot": out if os.path.exists(out) else None}))
    return 0 if len(samples) == probes else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 4))
