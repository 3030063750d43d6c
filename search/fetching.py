"""Fetch a query picture from a URL without letting anyone reach what the server can reach.

A URL search makes this server open a connection on a client's behalf, so the URL could
point it at the machine itself, the private network or the cloud's metadata service
(server-side request forgery). Every hop is therefore checked the same way:

- http and https only, no credentials in the URL;
- the host name is resolved once, and refused when ANY of its addresses is not a public
  unicast address (IPv4 and IPv6, including IPv4 written inside IPv6);
- the connection goes to an address that was checked, never to the name again, so a DNS
  answer that changes between the check and the connection (DNS rebinding) cannot slip
  in; https still verifies the certificate against the name (SNI);
- each redirect is a new hop, checked again, at most MAX_REDIRECTS of them;
- only the ports the settings name (80 and 443 by default), so a URL cannot probe what else
  a host runs; and every way a connection can fail (refused, timed out, reset, TLS) reads
  the same, so the answer does not tell them apart either;
- IMAGE_MAX_BYTES while reading.

A URL search holds one of the web process's few request threads, so its time is bounded
hard, not step by step: a server that drips its status line, its headers, `100 Continue`s or
a chunk-size line one byte at a time never trips a read timeout. A watchdog (`_Deadline`)
shuts the socket down when the deadline passes, whatever step the fetch is in (TLS handshake
included); name resolution runs in a thread of its own, waited for no longer than the time
left; and at most URL_FETCH_MAX_IN_FLIGHT fetches run at once per process, the next ones
refused at once with `url_fetch_busy` (`FetchBusy`).

Catalog sync (catalog.sync) fetches feed pictures through the same checks, with its own
policy (`FetchPolicy.for_feeds`): a longer deadline, and private networks allowed when the
operator says so, since feeds are written by operators and pictures often live inside.
It asks conditionally (`fetch_if_changed`): a picture already in the catalog is downloaded
again only when its server says it changed.

Refusals are `ImageRejected`s, so the API reports them like any other bad picture.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

from search.imaging import ImageRejected, too_large_error

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
MAX_URL_LENGTH = 2048
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "VisualSearch/1.0 (search by URL)"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK_BYTES = 64 * 1024
# Characters a path or query may keep as they are; anything else (spaces, non-ASCII) is
# percent-encoded, as a browser would before sending it.
_SAFE_IN_PATH = "/%:@!$&'()*+,;=-._~?"
# What a host name may hold once in IDNA form; an IPv6 literal is checked by parsing it.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a site's own translator
# Name lookups running at once per process. getaddrinfo cannot be interrupted: a lookup the
# fetch stopped waiting for runs on in its thread, so these threads are few and bounded.
_MAX_LOOKUPS = 4

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float  # seconds to connect, and to wait for each read
    deadline: float  # seconds for the whole fetch, redirects included
    max_bytes: int
    # For tests only: 127.0.0.0/8 and ::1 become fetchable. Private, link-local and every
    # other refused range stay refused, so a redirect from loopback to 10.0.0.1 still is.
    allow_loopback: bool = False
    # Catalog feeds only, when the operator allows it (SYNC_ALLOW_PRIVATE_NETWORKS): private
    # ranges (10/8, 172.16/12, 192.168/16, fc00::/7) become fetchable. Loopback, link-local
    # (the cloud metadata service) and the rest stay refused.
    allow_private: bool = False
    # The ports a URL may name; None (tests only: their servers listen on any port): all.
    ports: frozenset[int] | None = frozenset({80, 443})
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls) -> FetchPolicy:
        from django.conf import settings

        ports = settings.URL_FETCH_PORTS
        return cls(
            timeout=settings.URL_FETCH_TIMEOUT_SECONDS,
            deadline=settings.URL_FETCH_DEADLINE_SECONDS,
            max_bytes=settings.IMAGE_MAX_BYTES,
            allow_loopback=settings.URL_FETCH_ALLOW_LOOPBACK,
            ports=None if ports is None else frozenset(ports),
        )

    @classmethod
    def for_feeds(cls) -> FetchPolicy:
        """The policy of catalog sync: the feed's pictures, fetched by a command or a worker,
        not a request thread, so its deadline is its own (SYNC_FETCH_DEADLINE_SECONDS)."""
        from django.conf import settings

        ports = settings.URL_FETCH_PORTS
        return cls(
            timeout=settings.URL_FETCH_TIMEOUT_SECONDS,
            deadline=settings.SYNC_FETCH_DEADLINE_SECONDS,
            max_bytes=settings.IMAGE_MAX_BYTES,
            allow_loopback=settings.URL_FETCH_ALLOW_LOOPBACK,
            allow_private=settings.SYNC_ALLOW_PRIVATE_NETWORKS,
            ports=None if ports is None else frozenset(ports),
        )


class FetchBusy(ImageRejected):
    """Every URL fetch slot of this process is taken; `retry_after` seconds frees one."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "url_fetch_busy",
            "This server is fetching as many URLs as it allows at once; try again in "
            f"{retry_after} seconds, or download the picture and send it as `image`.",
        )
        self.retry_after = retry_after


class _FetchSlots:
    """How many URL fetches this process runs at once; the limit is read on each use, so a
    changed setting (tests) applies at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = 0

    @contextmanager
    def slot(self, *, limit: int, retry_after: int) -> Iterator[None]:
        with self._lock:
            if self._taken >= limit:
                raise FetchBusy(retry_after)
            self._taken += 1
        try:
            yield
        finally:
            with self._lock:
                self._taken -= 1


_slots = _FetchSlots()
_lookups = threading.BoundedSemaphore(_MAX_LOOKUPS)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as sent in SNI and checked against the certificate: IDNA, no brackets
    port: int
    path: str  # path and query, percent-encoded
    host_header: str


def fetch_query_image(url: object) -> bytes:
    """The picture at `url` for a search, as the settings allow; raises ImageRejected."""
    from django.conf import settings

    if not settings.SEARCH_BY_URL:
        raise ImageRejected(
            "url_search_disabled",
            "Search by URL is turned off on this server; send the picture itself as "
            "`image` instead.",
        )
    policy = FetchPolicy.from_settings()
    check_port(parse_url(url), policy=policy)  # what is refused anyway takes no slot
    # A slot frees within one deadline: the longest a fetch can hold it.
    retry_after = math.ceil(policy.deadline)
    with _slots.slot(limit=settings.URL_FETCH_MAX_IN_FLIGHT, retry_after=retry_after):
        return fetch_image(url, policy=policy)


def fetch_image(url: object, *, policy: FetchPolicy) -> bytes:
    """The body at `url`, following at most MAX_REDIRECTS redirects, each one checked,
    all of it within `policy.deadline` seconds."""
    fetched = fetch_if_changed(url, policy=policy)
    assert fetched.data is not None  # nothing conditional was asked
    return fetched.data


@dataclass(frozen=True)
class FetchedPicture:
    """What `fetch_if_changed` got: the body, or None when the server said the caller's
    copy is current (304); and the validators to send next time."""

    data: bytes | None
    etag: str = ""
    last_modified: str = ""


def fetch_if_changed(
    url: object, *, policy: FetchPolicy, etag: str = "", last_modified: str = ""
) -> FetchedPicture:
    """`fetch_image`, asking only for a body that differs from the copy `etag` and
    `last_modified` (the validators of an earlier answer) name; none: an ordinary GET."""
    conditions = {}
    if etag:
        conditions["If-None-Match"] = etag
    if last_modified:
        conditions["If-Modified-Since"] = last_modified
    with _Deadline(policy.deadline) as deadline:
        for _hop in range(MAX_REDIRECTS + 1):
            target = parse_url(url)
            check_port(target, policy=policy)
            addresses = checked_addresses(
                target.host, target.port, policy=policy, deadline=deadline
            )
            answer = _get(target, addresses, policy=policy, deadline=deadline, headers=conditions)
            if not isinstance(answer, str):
                return answer
            url = urljoin(_url_of(target), answer)  # a redirect: its Location, maybe relative
    raise fetch_failed(f"it redirected more than {MAX_REDIRECTS} times")


def parse_url(url: object) -> _Target:
    """What to connect to for `url`; refuses what no hop may ever fetch."""
    if not isinstance(url, str) or not url.strip():
        raise not_allowed("Send `url` as an http:// or https:// address.")
    if len(url) > MAX_URL_LENGTH:
        raise not_allowed(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise not_allowed("The URL cannot be parsed; check its host and port.") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise not_allowed("Only http:// and https:// URLs can be searched.")
    if parts.username is not None or parts.password is not None:
        raise not_allowed("A URL with a user name or password in it cannot be searched.")
    if not parts.hostname:
        raise not_allowed("The URL has no host name.")
    if port == 0:
        raise not_allowed("The URL's port must be from 1 to 65535.")
    try:
        host = parts.hostname.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise not_allowed("The URL's host name is not a valid domain name.") from None
    if not (_HOST_NAME.fullmatch(host) or _is_ipv6_literal(host)):
        raise not_allowed("The URL's host name is not a valid domain name.")
    port = port or _DEFAULT_PORTS[scheme]
    path = quote(parts.path or "/", safe=_SAFE_IN_PATH)
    if parts.query:
        path += "?" + quote(parts.query, safe=_SAFE_IN_PATH)
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == _DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    return _Target(scheme=scheme, host=host, port=port, path=path, host_header=host_header)


def check_port(target: _Target, *, policy: FetchPolicy) -> None:
    """Refuses a port the policy does not name, before any lookup or connection."""
    if policy.ports is not None and target.port not in policy.ports:
        allowed = " or ".join(str(port) for port in sorted(policy.ports))
        raise not_allowed(
            f"Only URLs on port {allowed} can be searched; this one names port {target.port}."
        )


def _is_ipv6_literal(host: str) -> bool:
    if "%" in host:  # a zone (fe80::1%eth0) names one of this machine's interfaces
        return False
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order (tests replace this)."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [sockaddr[0] for _family, _type, _proto, _name, sockaddr in answers]


def checked_addresses(
    host: str, port: int, *, policy: FetchPolicy, deadline: _Deadline | None = None
) -> list[Address]:
    """The addresses to connect to for `host`, all of them allowed, or a refusal.

    One refused address refuses the host: which one a connection would use is up to the
    resolver's order, and a name that also points inside is not one to trust.
    """
    deadline = deadline or _Deadline(policy.deadline, watchdog=False)
    try:
        answers = _resolve_within(host, port, deadline.wait(policy))
    except TimeoutError:
        raise fetch_failed(f"the host name {host} could not be resolved in time") from None
    except (socket.gaierror, UnicodeError, OSError):
        raise fetch_failed(f"the host name {host} could not be resolved") from None
    addresses: list[Address] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            raise not_allowed_address() from None
        connectable = address_to_connect(
            address, allow_loopback=policy.allow_loopback, allow_private=policy.allow_private
        )
        if connectable is None:
            raise not_allowed_address()
        addresses.append(connectable)
    if not addresses:
        raise fetch_failed(f"the host name {host} has no address")
    return addresses


def _resolve_within(host: str, port: int, seconds: float) -> list[str]:
    """resolve_host's answer, or TimeoutError after `seconds`.

    getaddrinfo has no timeout of its own (a resolver that drops queries makes it wait its
    retries out, on every redirect hop), so it runs in a daemon thread that the fetch stops
    waiting for; at most _MAX_LOOKUPS of them run at once.
    """
    waited = time.monotonic()
    if not _lookups.acquire(timeout=seconds):
        raise TimeoutError("every lookup thread is busy")
    answer: Future[list[str]] = Future()
    lookup = resolve_host  # read now: tests replace the module's resolve_host

    def run() -> None:
        try:
            answer.set_result(lookup(host, port))
        except BaseException as exc:  # handed to the waiting fetch
            answer.set_exception(exc)
        finally:
            _lookups.release()

    threading.Thread(target=run, name="url-fetch-lookup", daemon=True).start()
    return answer.result(timeout=max(0.0, seconds - (time.monotonic() - waited)))


def address_to_connect(
    address: Address, *, allow_loopback: bool = False, allow_private: bool = False
) -> Address | None:
    """`address` if it is a public unicast address (its IPv4 form when IPv4-mapped), else None.

    IPv4 carried inside IPv6 is judged by the IPv4 address it carries: ::ffff:127.0.0.1
    reaches 127.0.0.1, 64:ff9b::a00:1 (NAT64) reaches 10.0.0.1, 2002:a00:1:: (6to4) a
    10.0.0.1 behind a relay.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_to_connect(
                address.ipv4_mapped, allow_loopback=allow_loopback, allow_private=allow_private
            )
        if address in _NAT64:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            return address if _is_public(carried) else None
        if address in _NAT64_LOCAL:
            return None
        if address.sixtofour is not None and not _is_public(address.sixtofour):
            return None
        if address.teredo is not None and not all(map(_is_public, address.teredo)):
            return None
    if allow_loopback and address.is_loopback:
        return address
    if allow_private and _is_private_network(address):
        return address
    return address if _is_public(address) else None


_PRIVATE_NETWORKS = [
    ipaddress.ip_network(cidr)
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
]


def _is_private_network(address: Address) -> bool:
    """A site's own network (RFC 1918, IPv6 unique local): never loopback, link-local,
    carrier-grade NAT or any other range Python also counts as private."""
    return any(address in network for network in _PRIVATE_NETWORKS)


def _is_public(address: Address) -> bool:
    # is_global alone is not enough: Python counts multicast (224.0.0.0/4, ff0e::/16) and,
    # for IPv6, deprecated site-local fec0::/10 as global.
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_private
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_reserved
        and not address.is_unspecified
        and not (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


class _Deadline:
    """The clock of one fetch, and its watchdog.

    Socket timeouts bound each wait, not their sum: a server that sends a byte just
    before each timeout keeps a fetch alive for ever. So a timer shuts the fetch's socket
    down when the deadline passes, whatever step it is in (connecting, the TLS handshake,
    the status line, the headers, a chunk-size line, the body); the blocked read then ends
    at once. The watchdog shuts a duplicate of the socket's descriptor that it alone
    closes: http.client may close its own socket at any time, and the descriptor number
    could then belong to another connection of the process.
    """

    def __init__(self, seconds: float, *, watchdog: bool = True) -> None:
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: socket.socket | None = None
        self.expired = False
        self._timer: threading.Timer | None = None
        if watchdog:
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.name = "url-fetch-deadline"
            self._timer.daemon = True
            self._timer.start()

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.forget()

    def left(self) -> float:
        return self._ends - time.monotonic()

    def wait(self, policy: FetchPolicy) -> float:
        """How long the next step may wait: the read timeout, within the deadline."""
        left = self.left()
        if left <= 0 or self.expired:
            raise TimeoutError("the fetch's deadline passed")
        return min(policy.timeout, left)

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline (at once if it has passed)."""
        watched = sock.dup()
        with self._lock:
            self._close_watched()
            self._watched = watched
            if self.expired:
                _shut_down(watched)

    def forget(self) -> None:
        with self._lock:
            self._close_watched()

    def _close_watched(self) -> None:
        if self._watched is not None:
            self._watched.close()
            self._watched = None

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._watched is not None:
                _shut_down(self._watched)


def _shut_down(sock: socket.socket) -> None:
    # Not connected (yet, or any more) raises OSError: the next step finds the deadline.
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked on the same socket


def _get(
    target: _Target,
    addresses: list[Address],
    *,
    policy: FetchPolicy,
    deadline: _Deadline,
    headers: dict[str, str] | None = None,
) -> FetchedPicture | str:
    """GET `target` from one of `addresses`: the answer, or a redirect's Location."""
    connection = None
    try:
        connection = _connect(target, addresses, policy=policy, deadline=deadline)
        # Kept here: http.client lets go of it once an answer says "Connection: close".
        sock = connection.sock
        sock.settimeout(deadline.wait(policy))
        connection.request(
            "GET",
            target.path,
            headers={
                "Host": target.host_header,
                "User-Agent": USER_AGENT,
                "Accept": "image/*",
                "Connection": "close",
                **(headers or {}),
            },
        )
        response = connection.getresponse()
        deadline.wait(policy)  # the watchdog may have ended the headers early
        if response.status in REDIRECT_STATUSES:
            location = response.getheader("Location")
            if not location:
                raise fetch_failed(f"it answered {response.status} without a Location")
            return location
        validators = {
            "etag": (response.getheader("ETag") or "")[:200],
            "last_modified": (response.getheader("Last-Modified") or "")[:100],
        }
        if response.status == 304 and headers:
            return FetchedPicture(data=None, **validators)
        if not 200 <= response.status < 300:
            raise fetch_failed(f"it answered HTTP {response.status}")
        body = _read_body(response, sock, policy=policy, deadline=deadline)
        # A body without a length ends when the socket does, as the watchdog's shutdown
        # makes it: what came before the deadline is not the whole picture.
        deadline.wait(policy)
        return FetchedPicture(data=body, **validators)
    except (OSError, http.client.HTTPException) as exc:
        # Refused, timed out, reset, a TLS failure or the deadline: one sentence for all,
        # or the answer would tell a client which ports of a host are open.
        reason = "the deadline passed" if deadline.expired else repr(exc)
        logger.info("URL fetch from %s:%s failed: %s", target.host, target.port, reason)
        raise fetch_failed(UNREACHABLE) from None
    finally:
        deadline.forget()
        if connection is not None:
            connection.close()


def _connect(
    target: _Target, addresses: list[Address], *, policy: FetchPolicy, deadline: _Deadline
) -> http.client.HTTPConnection:
    """A connection to the first of `addresses` that answers; never a new lookup."""
    failure: OSError = ConnectionError("no address")
    for address in addresses:
        timeout = deadline.wait(policy)
        if target.scheme == "https":
            context = policy.ssl_context or ssl.create_default_context()
            connection: http.client.HTTPConnection = _HTTPSConnectionTo(
                address, target.port, deadline, hostname=target.host, context=context
            )
        else:
            connection = _HTTPConnectionTo(address, target.port, deadline)
        connection.timeout = timeout
        try:
            connection.connect()
            return connection
        except ssl.SSLError:
            connection.close()
            raise  # the server answered, wrongly: another address would not do better
        except OSError as exc:
            failure = exc
        connection.close()
    raise failure


def _open_socket(address: Address, port: int, deadline: _Deadline, timeout: float) -> socket.socket:
    """A TCP connection to `address`, watched by `deadline` from before it connects."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        deadline.watch(sock)
        sock.settimeout(timeout)
        sock.connect((str(address), port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        deadline.forget()
        sock.close()
        raise
    return sock


class _HTTPConnectionTo(http.client.HTTPConnection):
    """HTTP to an address that was already checked, watched by the fetch's deadline."""

    def __init__(self, address: Address, port: int, deadline: _Deadline) -> None:
        super().__init__(str(address), port)
        self._address, self._deadline = address, deadline

    def connect(self) -> None:
        self.sock = _open_socket(self._address, self.port, self._deadline, self.timeout)


class _HTTPSConnectionTo(http.client.HTTPSConnection):
    """HTTPS to an address that was already checked, verifying the certificate for `hostname`.

    http.client would otherwise send the address as SNI and check the certificate against it.
    """

    def __init__(
        self,
        address: Address,
        port: int,
        deadline: _Deadline,
        *,
        hostname: str,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(str(address), port, context=context)
        self._address, self._deadline, self._hostname = address, deadline, hostname

    def connect(self) -> None:
        sock = _open_socket(self._address, self.port, self._deadline, self.timeout)
        # The handshake runs on the watched connection: the watchdog ends a stalled one.
        self.sock = self._context.wrap_socket(sock, server_hostname=self._hostname)


def _read_body(response, sock, *, policy: FetchPolicy, deadline: _Deadline) -> bytes:
    """The body, stopped as soon as it passes `policy.max_bytes` or the deadline."""
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > policy.max_bytes:
        raise too_large_error(policy.max_bytes)
    body = bytearray()
    while True:
        sock.settimeout(deadline.wait(policy))
        chunk = response.read1(min(_CHUNK_BYTES, policy.max_bytes + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > policy.max_bytes:
            raise too_large_error(policy.max_bytes)


def _url_of(target: _Target) -> str:
    return f"{target.scheme}://{target.host_header}{target.path}"


def not_allowed(detail: str) -> ImageRejected:
    return ImageRejected("url_not_allowed", detail)


def not_allowed_address() -> ImageRejected:
    # The address itself is not repeated: it would tell a client how internal names resolve.
    return not_allowed(
        "The URL's host is not a public internet address (it resolves to a loopback, "
        "private, link-local, multicast or reserved one); use a publicly reachable URL."
    )


# Why a fetch failed once a connection was tried, whatever happened.
UNREACHABLE = (
    "the connection to its server failed (refused, reset, too slow, or an https certificate "
    "that is not valid for the host)"
)


def fetch_failed(reason: str) -> ImageRejected:
    return ImageRejected(
        "url_fetch_failed",
        f"The picture could not be fetched from the URL: {reason}. Check the URL, or "
        "download the picture and send it as `image`.",
    )
