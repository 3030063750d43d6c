"""The HTTP plumbing that the service fakes in tests/fakes share.

`FakeHTTPServer` serves one fake on 127.0.0.1 from a thread (`start()`/`stop()` or `with`;
`host`, `url`). Per request it reads the body, applies an injected delay, and writes the
`Response` that the subclass's `_dispatch(handler, raw, failure)` returns; the subclass
answers as its service would, records with `_record(...)` and defines `fail_next(...)` on
the shared fault queue: `_add_fault(Fault(...))` fails the next n requests whose path
contains `path_contains` (the base adds `Retry-After`); `delay_next(...)` holds them, then
answers and applies them even when the client has given up. `reset_faults()` forgets
faults; `reset()` also forgets records and drops held requests unanswered, as `stop()`
does, so a late one cannot leak into the next test. Connections are HTTP/1.1 keep-alive,
as the SDKs' pools expect; `stop()` shuts them so no handler thread outlives the server.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import urlsplit

RecordT = TypeVar("RecordT")


class Refusal(Exception):
    """An error answer; each fake shapes its body the way its service does."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Fault:
    """A pending injected failure (with a status) or delay (without one)."""

    remaining: int
    path_contains: str
    status: int | None = None
    delay: float = 0.0
    body: bytes | None = None  # sent as-is instead of the service's error body
    retry_after: float | None = None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class KeepAliveHandler(BaseHTTPRequestHandler):
    """Hands every request to the fake that owns the server.

    A fake subclasses this and sets `do_<METHOD> = KeepAliveHandler.serve` for the methods
    its service answers, so that any other gets http.server's own 501.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    # Headers and body go out in separate writes; with Nagle on, each answer waits ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def serve(self) -> None:
        self.server.fake._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded on the fake's `requests` instead of flooding stderr


class FakeHTTPServer(Generic[RecordT]):
    """A fake service on 127.0.0.1; use as a context manager or call start()/stop().

    Subclasses set `handler_class` and `thread_name` and implement `_dispatch`.
    `RecordT` is what the subclass records per request and `requests` returns.
    """

    handler_class: ClassVar[type[KeepAliveHandler]]
    thread_name: ClassVar[str]

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._lock = threading.RLock()
        # Set by reset() and stop(): requests still held by delay_next are then dropped
        # unanswered, so a late one cannot leak into the next test.
        self._cancelled = threading.Event()
        self._faults: list[Fault] = []
        self._requests: list[RecordT] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._cancelled = threading.Event()
        self._server = _Server(("127.0.0.1", self._port), self.handler_class, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns promptly
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._cancelled.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, where the running server listens."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def reset(self) -> None:
        """Drop every injected fault, recorded request and still-delayed request."""
        with self._lock:
            self._cancelled.set()
            self._cancelled = threading.Event()
            self._faults.clear()
            self._requests.clear()

    def delay_next(self, n: int, seconds: float, path_contains: str = "") -> None:
        """Hold the next n matching requests for `seconds`, then answer them normally."""
        self._add_fault(Fault(n, path_contains, delay=seconds))

    def reset_faults(self) -> None:
        """Forget pending injected failures and delays; stored data and records stay."""
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordT]:
        with self._lock:
            return list(self._requests)

    def _dispatch(self, handler: KeepAliveHandler, raw: bytes, failure: Fault | None) -> Response:
        """Answer and record one request; a `failure` is answered instead of applying it."""
        raise NotImplementedError

    def _add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _record(self, request: RecordT) -> int:
        """Record one answered request; returns how many are recorded, this one included."""
        with self._lock:
            self._requests.append(request)
            return len(self._requests)

    def _crash(self) -> Refusal:
        """The 500 for a bug in `_dispatch`, traceback on stderr: fail loudly, never hang."""
        traceback.print_exc(file=sys.stderr)
        return Refusal(500, f"{type(self).__name__} crashed; see the traceback on stderr")

    def _serve(self, handler: KeepAliveHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        cancelled = self._cancelled  # reset() replaces it; this request waits on this one
        delay, failure = self._take_faults(urlsplit(handler.path).path)
        if delay is not None and cancelled.wait(delay.delay):
            handler.close_connection = True  # dropped unanswered and unrecorded
            return
        response = self._dispatch(handler, raw, failure)
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            if failure is not None and failure.retry_after is not None:
                handler.send_header("Retry-After", f"{failure.retry_after:g}")
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(response.body)
        except OSError:  # the client gave up (timeout) and closed the connection
            handler.close_connection = True

    def _take_faults(self, path: str) -> tuple[Fault | None, Fault | None]:
        """The first pending delay and the first pending failure that match `path`."""
        taken: dict[bool, Fault] = {}
        with self._lock:
            for fault in self._faults:
                is_delay = fault.status is None
                if is_delay not in taken and fault.remaining > 0 and fault.path_contains in path:
                    fault.remaining -= 1
                    taken[is_delay] = fault
        return taken.get(True), taken.get(False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[KeepAliveHandler],
        fake: FakeHTTPServer[Any],
    ) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Drop kept-alive connections so stop() leaves no handler thread waiting on them."""
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
