"""A web server on 127.0.0.1 for catalog feeds' pictures: it serves what the test puts in
`files` with an ETag of each body, answers 304 to a request whose If-None-Match names the
current one, and counts answers and body bytes sent, so "downloads nothing the second
time" is measured on the wire."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageDraw

from tests.conftest import encode


def picture(seed: int) -> bytes:
    """A small PNG of its own for each seed."""
    image = Image.new("RGB", (96, 64), ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    ImageDraw.Draw(image).rectangle((seed % 50, 8, seed % 50 + 40, 56), fill=(250, 250, 250))
    return encode(image, "PNG")


class FeedPictureServer:
    """Serves `files` (path -> bytes) with an ETag of each body, answering 304 to a request
    whose If-None-Match names the current one; counts answers and body bytes sent."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.statuses: list[int] = []
        self.body_bytes = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def forget_requests(self) -> None:
        with self._lock:
            self.statuses.clear()
            self.body_bytes = 0

    def answered(self, status: int, body: bytes) -> None:
        with self._lock:
            self.statuses.append(status)
            self.body_bytes += len(body)

    def __enter__(self) -> FeedPictureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(owner: FeedPictureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            body = owner.files.get(self.path)
            if body is None:
                return self._answer(404, b"not here")
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
            if self.headers.get("If-None-Match") == etag:
                return self._answer(304, b"", etag)
            return self._answer(200, body, etag)

        def _answer(self, status: int, body: bytes, etag: str = "") -> None:
            owner.answered(status, body)
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
