"""The limits every search door applies the same way: the API and the no-JavaScript form.

One rate limit (per client, shared by both doors: an IPv4 address or an IPv6 /64, read from
forwarded headers only behind trusted proxies), one request-size cap checked before the body
is read, and one way to read an uploaded file without trusting its size.
The refusals are `ImageRejected`s from `search.imaging`, so each door reports the same code
and sentence.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import IO

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from search.imaging import read_limited, too_large_error

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Headers only a proxy may write: believed from TRUSTED_PROXY_NETWORKS, dropped from anyone
# else (visualsearch.middleware.ProxyHeadersMiddleware) before Django or the app reads them.
FORWARDED_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_FORWARDED",
)
# One household or one cloud machine is handed a whole /64; counting per address would give
# it 2^64 budgets.
IPV6_CLIENT_PREFIX = 64


def parse_address(text: str) -> Address | None:
    """The IP address in `text`, as proxies write it: bare, `[v6]`, `[v6]:port` or
    `v4:port`; IPv4 written inside IPv6 (`::ffff:a.b.c.d`, from a dual-stack listener) is
    that IPv4. None when it is not an address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address.scope_id:  # fe80::1%eth0: the zone names a local interface, not a host
            return ipaddress.IPv6Address(address.packed)
    return address


@functools.lru_cache(maxsize=8)
def parse_networks(networks: Iterable[str]) -> tuple[Network, ...]:
    """TRUSTED_PROXY_NETWORKS as networks; a bare address is a network of one.
    Raises ValueError on anything else (the settings refuse to start with it)."""
    return tuple(ipaddress.ip_network(network.strip(), strict=False) for network in networks)


def _trusted(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def peer_is_trusted_proxy(request) -> bool:
    """Whether the connection comes from one of TRUSTED_PROXY_NETWORKS, the only peers
    whose forwarded headers mean anything."""
    networks = parse_networks(tuple(settings.TRUSTED_PROXY_NETWORKS))
    return _trusted(parse_address(request.META.get("REMOTE_ADDR", "")), networks)


def client_ip(request) -> str:
    """The address of the client, read from X-Forwarded-For only behind a trusted proxy.

    The header is believed only when the connection comes from TRUSTED_PROXY_NETWORKS:
    anyone else, a client reaching the published port directly too, wrote it themselves.
    Each proxy appends the address it received the request from, so the chain is read from
    the right, past hops that are themselves trusted proxies; the first other address is
    the client. TRUSTED_PROXIES, when above 0, says how many proxies append at most: the
    walk stops there, where the networks cover every address (a platform whose edge is the
    only way in: 0.0.0.0/0). A hop that is not an address ends the walk at the nearest
    address that was read: it was not written by a proxy, and must not become a new name on
    each request.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    networks = parse_networks(tuple(settings.TRUSTED_PROXY_NETWORKS))
    if not _trusted(parse_address(remote), networks):
        return remote
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    client = remote
    for examined, hop in enumerate(reversed(hops), start=1):
        address = parse_address(hop)
        if address is None:
            break
        client = str(address)
        if not _trusted(address, networks) or examined == settings.TRUSTED_PROXIES:
            break
    return client


def rate_limit_key(address: str) -> str:
    """The budget `address` counts against: an IPv4 address, an IPv6 /64, or for a peer
    that is not an IP (a Unix socket's empty address) a digest of the text, which every
    cache backend accepts as a key."""
    parsed = parse_address(address)
    if parsed is None:
        return "peer-" + hashlib.sha256(address.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


def client_key(request) -> str:
    """The key every per-client limit counts `request` against (search, wrong health
    tokens): its client's rate_limit_key."""
    return rate_limit_key(client_ip(request))


class SearchRateThrottle(SimpleRateThrottle):
    """SEARCH_RATE_LIMIT per client (an IPv4 address or an IPv6 /64), for anonymous and
    logged-in users alike."""

    scope = "search"

    def get_rate(self) -> str | None:
        return settings.SEARCH_RATE_LIMIT or None

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_key(request)}


def rate_limited(request) -> float | None:
    """For doors outside DRF: None when the search may go on, else seconds to wait."""
    throttle = SearchRateThrottle()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0


def throttled_detail(wait: float) -> str:
    return f"Too many searches from your address; try again in {max(1, round(wait))} s."


def max_request_bytes() -> int:
    """The largest search request body: an image of IMAGE_MAX_BYTES as base64, plus room."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def check_request_size(request) -> None:
    """Refuse, from the Content-Length header, a body too large to hold an acceptable image,
    before any of it is read (a multipart body would otherwise be buffered to disk first)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > max_request_bytes():
        raise too_large_error(settings.IMAGE_MAX_BYTES)


def read_upload(file: IO[bytes]) -> bytes:
    """An uploaded file's bytes, refused past IMAGE_MAX_BYTES without reading it whole."""
    return read_limited(file, max_bytes=settings.IMAGE_MAX_BYTES)
