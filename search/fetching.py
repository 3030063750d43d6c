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
- connect and read timeouts, a deadline for the whole fetch, and IMAGE_MAX_BYTES while
  reading.

Refusals are `ImageRejected`s, so the API reports them like any other bad picture.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

from search.imaging import ImageRejected, too_large_error

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

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float  # seconds to connect, and to wait for each read
    deadline: float  # seconds for the whole fetch, redirects included
    max_bytes: int
    # For tests only: 127.0.0.0/8 and ::1 become fetchable. Private, link-local and every
    # other refused range stay refused, so a redirect from loopback to 10.0.0.1 still is.
    allow_loopback: bool = False
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls) -> FetchPolicy:
        from django.conf import settings

        return cls(
            timeout=settings.URL_FETCH_TIMEOUT_SECONDS,
            deadline=settings.URL_FETCH_DEADLINE_SECONDS,
            max_bytes=settings.IMAGE_MAX_BYTES,
            allow_loopback=settings.URL_FETCH_ALLOW_LOOPBACK,
        )


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
    return fetch_image(url, policy=FetchPolicy.from_settings())


def fetch_image(url: object, *, policy: FetchPolicy) -> bytes:
    """The body at `url`, following at most MAX_REDIRECTS redirects, each one checked."""
    started = time.monotonic()
    for _hop in range(MAX_REDIRECTS + 1):
        target = parse_url(url)
        addresses = checked_addresses(target.host, target.port, policy=policy)
        answer = _get(target, addresses, policy=policy, started=started)
        if isinstance(answer, bytes):
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


def checked_addresses(host: str, port: int, *, policy: FetchPolicy) -> list[Address]:
    """The addresses to connect to for `host`, all of them allowed, or a refusal.

    One refused address refuses the host: which one a connection would use is up to the
    resolver's order, and a name that also points inside is not one to trust.
    """
    try:
        answers = resolve_host(host, port)
    except (socket.gaierror, UnicodeError, OSError):
        raise fetch_failed(f"the host name {host} could not be resolved") from None
    addresses: list[Address] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            raise not_allowed_address() from None
        connectable = address_to_connect(address, allow_loopback=policy.allow_loopback)
        if connectable is None:
            raise not_allowed_address()
        addresses.append(connectable)
    if not addresses:
        raise fetch_failed(f"the host name {host} has no address")
    return addresses


def address_to_connect(address: Address, *, allow_loopback: bool = False) -> Address | None:
    """`address` if it is a public unicast address (its IPv4 form when IPv4-mapped), else None.

    IPv4 carried inside IPv6 is judged by the IPv4 address it carries: ::ffff:127.0.0.1
    reaches 127.0.0.1, 64:ff9b::a00:1 (NAT64) reaches 10.0.0.1, 2002:a00:1:: (6to4) a
    10.0.0.1 behind a relay.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_to_connect(address.ipv4_mapped, allow_loopback=allow_loopback)
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
    return address if _is_public(address) else None


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


def _get(
    target: _Target, addresses: list[Address], *, policy: FetchPolicy, started: float
) -> bytes | str:
    """GET `target` from one of `addresses`: the body (bytes), or a redirect's Location."""
    connection = _connect(target, addresses, policy=policy, started=started)
    # Kept here: http.client lets go of it once an answer says "Connection: close".
    sock = connection.sock
    try:
        sock.settimeout(_wait(policy, started))
        connection.request(
            "GET",
            target.path,
            headers={
                "Host": target.host_header,
                "User-Agent": USER_AGENT,
                "Accept": "image/*",
                "Connection": "close",
            },
        )
        response = connection.getresponse()
        if response.status in REDIRECT_STATUSES:
            location = response.getheader("Location")
            if not location:
                raise fetch_failed(f"it answered {response.status} without a Location")
            return location
        if not 200 <= response.status < 300:
            raise fetch_failed(f"it answered HTTP {response.status}")
        return _read_body(response, sock, policy=policy, started=started)
    except TimeoutError:
        raise fetch_failed("it took too long to answer") from None
    except (OSError, http.client.HTTPException) as exc:
        raise fetch_failed(f"the connection failed ({type(exc).__name__})") from None
    finally:
        connection.close()


def _connect(
    target: _Target, addresses: list[Address], *, policy: FetchPolicy, started: float
) -> http.client.HTTPConnection:
    """A connection to the first of `addresses` that answers; never a new lookup."""
    failure = "it could not be reached"
    for address in addresses:
        timeout = min(policy.timeout, _wait(policy, started))
        if target.scheme == "https":
            context = policy.ssl_context or ssl.create_default_context()
            connection = _HTTPSConnectionTo(
                str(address), target.port, hostname=target.host, context=context, timeout=timeout
            )
        else:
            connection = http.client.HTTPConnection(str(address), target.port, timeout=timeout)
        try:
            connection.connect()
            return connection
        except ssl.SSLCertVerificationError:
            connection.close()
            raise fetch_failed("its certificate is not valid for the host name") from None
        except TimeoutError:
            failure = "it took too long to accept the connection"
        except OSError:
            failure = "it refused or dropped the connection"
        connection.close()
    raise fetch_failed(failure)


class _HTTPSConnectionTo(http.client.HTTPSConnection):
    """HTTPS to an address that was already checked, verifying the certificate for `hostname`.

    http.client would otherwise send the address as SNI and check the certificate against it.
    """

    def __init__(self, address: str, port: int, *, hostname: str, context, timeout: float):
        super().__init__(address, port, timeout=timeout, context=context)
        self._hostname = hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._hostname)


def _read_body(response, sock, *, policy: FetchPolicy, started: float) -> bytes:
    """The body, stopped as soon as it passes `policy.max_bytes` or the deadline."""
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > policy.max_bytes:
        raise too_large_error(policy.max_bytes)
    body = bytearray()
    while True:
        sock.settimeout(_wait(policy, started))
        chunk = response.read1(min(_CHUNK_BYTES, policy.max_bytes + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > policy.max_bytes:
            raise too_large_error(policy.max_bytes)


def _wait(policy: FetchPolicy, started: float) -> float:
    """How long the next network step may wait: the read timeout, within the deadline."""
    left = policy.deadline - (time.monotonic() - started)
    if left <= 0:
        raise fetch_failed("it took too long to send the picture")
    return min(policy.timeout, left)


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


def fetch_failed(reason: str) -> ImageRejected:
    return ImageRejected(
        "url_fetch_failed",
        f"The picture could not be fetched from the URL: {reason}. Check the URL, or "
        "download the picture and send it as `image`.",
    )
