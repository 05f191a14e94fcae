"""The watch page's HTTP server (standard library, one thread per request).

It serves the page, its script and stylesheet, a JSON state (long-polled), the step previews held in
memory, and the image files of the last good render: only those, by their exact path under the output
root, so no request can read any other file. Bound to 127.0.0.1 unless told otherwise; on loopback
it also refuses requests whose Host header names another host (DNS rebinding).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from sdbake.runner.watch import page
from sdbake.runner.watch.session import WatchSession

CONTENT_TYPES = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-store",
                    "Content-Security-Policy": "default-src 'none'; img-src 'self'; script-src 'self'; "
                                               "style-src 'self'; connect-src 'self'; base-uri 'none'; "
                                               "form-action 'none'; frame-ancestors 'none'"}
MAX_WAIT_S = 25.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WatchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, session: WatchSession, host: str = "127.0.0.1", port: int = 0):
        self.session = session
        self.loopback = is_loopback(host)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="sdbake-watch-server", daemon=True)
        thread.start()
        return thread


class Handler(BaseHTTPRequestHandler):
    server: WatchServer
    server_version = "sdbake-watch"
    sys_version = ""

    def log_message(self, format, *args):     # quiet: the watch log is for renders
        pass

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head: bool = False):
        if not self._host_allowed():
            return self._send(403, b"forbidden host\n", "text/plain; charset=utf-8", head)
        url = urlsplit(self.path)
        session = self.server.session
        if url.path == "/":
            body = page.page(session.snapshot).encode()
            return self._send(200, body, "text/html; charset=utf-8", head)
        if url.path == "/main":
            return self._send(200, page.main(session.snapshot).encode(), "text/html; charset=utf-8", head)
        if url.path == "/app.js":
            return self._send(200, page.SCRIPT.encode(), "text/javascript; charset=utf-8", head)
        if url.path == "/app.css":
            return self._send(200, page.STYLE.encode(), "text/css; charset=utf-8", head)
        if url.path == "/state.json":
            return self._send(200, json.dumps(self._state(url.query)).encode(), "application/json", head)
        if url.path.startswith("/files/"):
            return self._file(unquote(url.path[len("/files/"):]), head)
        if url.path.startswith("/preview/"):
            return self._preview(url.path[len("/preview/"):], head)
        return self._send(404, b"not found\n", "text/plain; charset=utf-8", head)

    def _host_allowed(self) -> bool:
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]"))

    def _state(self, query: str) -> dict:
        params = parse_qs(query)
        session = self.server.session
        snapshot = session.snapshot
        try:
            after = int(params.get("after", [""])[0])
            wait = min(max(float(params.get("wait", ["0"])[0]), 0.0), MAX_WAIT_S)
        except ValueError:
            after, wait = None, 0.0
        if after is not None and wait > 0:
            snapshot = session.wait_for_change(after, wait)
        return dataclasses.asdict(snapshot)

    def _file(self, relative: str, head: bool):
        session = self.server.session
        root = session.output_root
        listed = {path for _, path, _ in session.snapshot.images}
        if root is None or relative not in listed:      # only the render's own images, by exact name
            return self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
        target = (root / relative).resolve()
        suffix = target.suffix.lower()
        if not target.is_relative_to(root.resolve()) or suffix not in CONTENT_TYPES or not target.is_file():
            return self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
        return self._send(200, target.read_bytes(), CONTENT_TYPES[suffix], head)

    def _preview(self, rest: str, head: bool):
        parts = rest.split("/")
        data = None
        if len(parts) == 3 and parts[1].isdigit() and parts[2].endswith(".png") and parts[2][:-4].isdigit():
            data = self.server.session.preview_png(unquote(parts[0]), int(parts[1]), int(parts[2][:-4]))
        if data is None:
            return self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
        return self._send(200, data, "image/png", head)

    def _send(self, status: int, body: bytes, content_type: str, head: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
