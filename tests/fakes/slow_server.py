"""A TCP server on 127.0.0.1 that answers as slowly as a hostile one can, and never fails.

For the search-by-URL deadline tests: every byte arrives well within a read timeout, so only
a deadline for the whole fetch can end the request. Each way of being slow is a `behaviour`,
chosen by the first path segment of the request (`/status-line/x.jpg`), or for every
connection with `SlowServer(behaviour=...)` (a TLS handshake sends no path):

- `status-line`: an endless status line, one byte at a time;
- `header-lines`: a 200, then header line after header line, each sent at once;
- `continue`: `100 Continue` after `100 Continue`, which http.client skips forever;
- `chunked-size`: a chunked 200 whose first chunk-size line never ends;
- `body`: a 200 with a 1 MB Content-Length, then one byte at a time;
- `tls-hello`: the header of a 16 KiB TLS handshake record, then its bytes one at a time;
- `silent`: reads the request (if any) and says nothing.

`connections` counts the connections accepted; `open_connections` those the client has
not hung up yet (a fetch cut at its deadline closes its end).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Self

# fmt: off
BEHAVIOURS = (
    "status-line", "header-lines", "continue", "chunked-size", "body", "tls-hello", "silent",
)
# fmt: on


def _endless(first: bytes, then: bytes) -> Iterator[bytes]:
    yield first
    while True:
        yield then


def _script(behaviour: str) -> Iterator[bytes]:
    """What to send, one piece per `interval`, until the client hangs up."""
    if behaviour == "status-line":
        yield from (bytes([b]) for b in b"HTTP/1.1 200 ")
        yield from _endless(b"O", b"K")
    elif behaviour == "header-lines":
        yield b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
        yield from _endless(b"X-Pad: 0\r\n", b"X-Pad: 1\r\n")
    elif behaviour == "continue":
        yield from _endless(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n")
    elif behaviour == "chunked-size":
        yield b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        yield from _endless(b"0", b"0")
    elif behaviour == "body":
        yield b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
        yield from _endless(b"\xff", b"\xd8")
    elif behaviour == "tls-hello":
        # A handshake record of 16 KiB: the client waits for all of it before it can fail.
        yield b"\x16\x03\x03\x40\x00"
        yield from _endless(b"\x02", b"\x00")
    elif behaviour == "silent":
        return
    else:
        raise ValueError(f"no such behaviour: {behaviour}")


class SlowServer:
    def __init__(self, *, behaviour: str | None = None, interval: float = 0.05) -> None:
        self.behaviour = behaviour
        self.interval = interval
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, behaviour: str, *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}/{behaviour}/picture.jpg"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for connection in self._open:
                connection.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed by __exit__
            with self._lock:
                self.connections += 1
                self._open.add(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            behaviour = self.behaviour or self._requested_behaviour(connection)
            for piece in _script(behaviour):
                if self._stopping.wait(self.interval) or self._hung_up(connection):
                    return
                connection.sendall(piece)
            # `silent`: hold the connection until the client or the test lets go.
            while not self._stopping.wait(self.interval) and not self._hung_up(connection):
                pass
        except OSError:
            pass  # the client hung up mid-send
        finally:
            with self._lock:
                self._open.discard(connection)
            connection.close()

    def _requested_behaviour(self, connection: socket.socket) -> str:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            data = connection.recv(4096)
            if not data:
                break
            request += data
        path = request.split(b" ", 2)[1].decode("ascii") if request.count(b" ") >= 2 else "/"
        return path.strip("/").split("/", 1)[0] or "silent"

    @staticmethod
    def _hung_up(connection: socket.socket) -> bool:
        """True once the client has closed its end; what it sent meanwhile is dropped."""
        connection.setblocking(False)
        try:
            while True:
                if not connection.recv(65536):
                    return True
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            connection.setblocking(True)
