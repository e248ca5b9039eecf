"""A small MJPEG server so the overlay can be watched in a browser (headless device, ssh tunnel).

``/`` is a page showing the stream, ``/stream.mjpg`` the multipart JPEG stream, ``/frame.jpg`` the newest
frame and ``/stats.json`` the newest HUD figures. It binds to 127.0.0.1 by default (reach it from another
machine with ``ssh -L PORT:127.0.0.1:PORT device``). Frames are JPEG-encoded only while someone watches,
once per new frame however many clients there are. Standard library + OpenCV only.
"""

from __future__ import annotations

import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from edgeseg.apps.endoscopy import _cv

_BOUNDARY = "edgesegframe"

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgeseg demo - {title}</title>
<style>
 body {{ background:#111; color:#ddd; font-family:sans-serif; margin:16px; }}
 img {{ image-rendering:pixelated; border:1px solid #444; width:{width}px; }}
 #stats {{ font-family:monospace; margin-top:8px; white-space:pre; }}
</style></head>
<body>
<h3>edgeseg endoscopy demo &mdash; {title}</h3>
<img src="/stream.mjpg" alt="live overlay">
<div id="stats"></div>
<script>
async function poll() {{
  try {{
    const s = await (await fetch('/stats.json', {{cache: 'no-store'}})).json();
    document.getElementById('stats').textContent =
      `frame ${{s.frame}}  ${{s.fps.toFixed(1)}} FPS  inference ${{s.infer_ms.toFixed(1)}} ms  ` +
      `polyps ${{s.polyps}}  area ${{s.area_pct.toFixed(1)}}%`;
  }} catch (e) {{}}
  setTimeout(poll, 500);
}}
poll();
</script>
</body></html>
"""


class MjpegServer:
    """Serves the newest published frame as an MJPEG stream.

    Args:
        port: TCP port (0: any free one, see ``port`` after start).
        host: interface to bind (default localhost only).
        title: shown on the page.
        quality: JPEG quality.

    Examples:
        >>> with MjpegServer(8080, title="ultralightunet-s") as srv:
        ...     srv.publish(annotated_rgb, {"frame": 0, "fps": 0.0, ...})
    """

    def __init__(self, port: int, host: str = "127.0.0.1", title: str = "", quality: int = 80):
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"--serve port must be 0-65535, got {port}")
        self.host, self.requested_port, self.title, self.quality = host, int(port), title, int(quality)
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._stats: dict[str, Any] = {}
        self._closed = False
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.clients = 0

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self.requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> MjpegServer:
        server = self
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.requested_port), _handler_for(server))
        except OSError as exc:
            raise ValueError(
                f"--serve {self.requested_port}: cannot listen on {self.host}:{self.requested_port} "
                f"({exc.strerror}); choose another port"
            ) from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="edgeseg-mjpeg", daemon=True
        )
        self._thread.start()
        return self

    def publish(self, frame: np.ndarray, stats: dict[str, Any] | None = None) -> None:
        """Make ``frame`` (RGB uint8) the newest one; cheap (no encoding happens here)."""
        with self._cond:
            self._frame = frame
            self._seq += 1
            if stats is not None:
                self._stats = dict(stats)
            self._cond.notify_all()

    def jpeg(self, after: int = 0, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """The newest frame as JPEG once its sequence number is above ``after`` (None on timeout/close)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._seq > after, timeout):
                return None
            if self._closed or self._frame is None:
                return None
            if self._jpeg is None or self._jpeg[0] != self._seq:
                cv2 = _cv.cv2()
                bgr = cv2.cvtColor(self._frame, cv2.COLOR_RGB2BGR)
                ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    return None
                self._jpeg = (self._seq, buf.tobytes())
            return self._jpeg

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return dict(self._stats)

    def page(self) -> bytes:
        width = 512
        with self._cond:
            if self._frame is not None:
                width = max(512, int(self._frame.shape[1]))
        return _PAGE.format(title=html.escape(self.title or "live"), width=width).encode()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_for(server: MjpegServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the demo's stderr clean
            return

        def _send(self, body: bytes, ctype: str, code: int = 200) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(server.page(), "text/html; charset=utf-8")
            elif path == "/stats.json":
                self._send(json.dumps(server.stats()).encode(), "application/json")
            elif path == "/frame.jpg":
                got = server.jpeg(after=0, timeout=2.0)
                if got is None:
                    self._send(b"no frame yet", "text/plain", 503)
                else:
                    self._send(got[1], "image/jpeg")
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._send(b"not found: try / or /stream.mjpg", "text/plain", 404)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seq = 0
            with server._cond:
                server.clients += 1
            try:
                while not server.closed:
                    got = server.jpeg(after=seq, timeout=1.0)
                    if got is None:
                        continue
                    seq, data = got
                    self.wfile.write(
                        f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n".encode()
                    )
                    self.wfile.write(data)
                    self.wfile.write(b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with server._cond:
                    server.clients -= 1

    return Handler
