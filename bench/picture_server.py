"""A feed's picture server on 127.0.0.1, for the sync benchmark and the tests: it serves the
bytes it was given with an ETag of each, answers 304 to a request whose If-None-Match names
it, and counts answers by status and body bytes sent, so "nothing downloaded" is measured
on the wire. It lives here, not in tests/fakes, because a benchmark runs without pytest."""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageDraw

PICTURE_SIZE = (160, 120)
LAST_MODIFIED = "Sun, 06 Dec 2026 04:00:00 GMT"  # sent, and kept by the fetcher; not judged


def picture(number: int, seed: int = 0) -> bytes:
    """A small PNG of its own for each `number`: a few shapes drawn from (seed, number),
    and the number written into the first pixels, so no two share their bytes."""
    rng = random.Random(f"{seed}-{number}")
    colour = lambda: tuple(rng.randrange(256) for _ in range(3))  # noqa: E731
    image = Image.new("RGB", PICTURE_SIZE, colour())
    draw = ImageDraw.Draw(image)
    width, height = PICTURE_SIZE
    for _ in range(3):
        x, y = rng.randrange(width - 20), rng.randrange(height - 20)
        box = (x, y, x + rng.randrange(20, width - x + 1), y + rng.randrange(20, height - y + 1))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour())
    image.putpixel((0, 0), (number >> 16 & 255, number >> 8 & 255, number & 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class PictureServer:
    """Serves `files` (path -> bytes; a test may change them between requests) with an ETag
    of each body. `statuses` lists the answers in order and `body_bytes` counts what they
    sent, until `forget_requests()`; `take_counts()` returns them and starts afresh."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
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

    def take_counts(self) -> tuple[dict[int, int], int]:
        """(status -> answers, body bytes sent) since the last call."""
        with self._lock:
            counts = (dict(sorted(Counter(self.statuses).items())), self.body_bytes)
        self.forget_requests()
        return counts

    def _answered(self, status: int, body: bytes) -> None:
        with self._lock:
            self.statuses.append(status)
            self.body_bytes += len(body)

    def __enter__(self) -> PictureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(owner: PictureServer) -> type[BaseHTTPRequestHandler]:
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
            owner._answered(status, body)
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", LAST_MODIFIED)
            if status != 304:
                self.send_header("Content-Type", "image/png" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
