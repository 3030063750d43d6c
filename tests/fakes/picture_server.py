"""A web server on 127.0.0.1 that serves a picture, and misbehaves the ways real ones do.

For the search-by-URL tests: a real server over real sockets, so the fetcher's timeouts,
limits and redirects are tested against what a socket actually does.

- `/picture.jpg`: the picture given at start.
- `/hops/N`: a 302 to `/hops/N-1`; `/hops/0` is a 302 to `/picture.jpg`, so `/hops/3` is
  three redirects before the picture.
- `/to?location=URL`: a 302 to URL, whatever it is.
- `/slow`: the picture, after `slow_seconds`.
- `/drip`: a Content-Length of 1 MB, then one byte every 50 ms.
- `/endless`: no Content-Length, bytes until the client hangs up.
- `/declared-huge`: a Content-Length of 10^12 bytes, then a few of them.
- anything else: 404.

Every request is recorded as `(path, Host header)` in `requests`. With `tls=(certfile,
keyfile)` it speaks https, and `sni_names` records the names clients asked for.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

_FILLER = b"\0" * 65536


class PictureServer:
    def __init__(
        self,
        picture: bytes,
        *,
        slow_seconds: float = 5.0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.picture = picture
        self.slow_seconds = slow_seconds
        self.requests: list[tuple[str, str]] = []
        self.sni_names: list[str | None] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            context.sni_callback = lambda _sock, name, _context: self.sni_names.append(name)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()  # lets /slow, /drip and /endless end at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(owner: PictureServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest's output clean
            pass

        def do_GET(self) -> None:
            owner.requests.append((self.path, self.headers.get("Host", "")))
            parts = urlsplit(self.path)
            path = parts.path
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                if path == "/picture.jpg":
                    self._send(200, owner.picture, "image/jpeg")
                elif path.startswith("/hops/"):
                    left = int(path.removeprefix("/hops/"))
                    self._redirect(f"/hops/{left - 1}" if left > 0 else "/picture.jpg")
                elif path == "/to":
                    self._redirect(parse_qs(parts.query)["location"][0])
                elif path == "/slow":
                    if not owner._stopping.wait(owner.slow_seconds):
                        self._send(200, owner.picture, "image/jpeg")
                elif path == "/drip":
                    self._head(200, "image/jpeg", length=1_000_000)
                    while not owner._stopping.wait(0.05):
                        self.wfile.write(b"\xff")
                        self.wfile.flush()
                elif path == "/endless":
                    self._head(200, "image/jpeg", length=None)
                    while not owner._stopping.is_set():
                        self.wfile.write(_FILLER)
                elif path == "/declared-huge":
                    self._head(200, "image/jpeg", length=10**12)
                    self.wfile.write(owner.picture[:100])
                else:
                    self._send(404, b"not here", "text/plain")

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self._head(status, content_type, length=len(body))
            self.wfile.write(body)

        def _head(self, status: int, content_type: str, *, length: int | None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if length is None:
                self.send_header("Connection", "close")  # the body ends when the socket does
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(length))
            self.end_headers()

    return Handler
