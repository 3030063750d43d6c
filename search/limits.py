"""The limits every search door applies the same way: the API and the no-JavaScript form.

One rate limit (per client address, shared by both doors), one request-size cap checked
before the body is read, and one way to read an uploaded file without trusting its size.
The refusals are `ImageRejected`s from `search.imaging`, so each door reports the same code
and sentence.
"""

from __future__ import annotations

from typing import IO

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from search.imaging import read_limited, too_large_error


def client_ip(request) -> str:
    """The address of the client, trusting X-Forwarded-For only as far as TRUSTED_PROXIES says.

    Each trusted proxy appends the address it received the request from, so with N trusted
    proxies in front the client is the N-th address from the right. Anything to the left of
    that was written by the client itself and proves nothing.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = settings.TRUSTED_PROXIES
    if not trusted:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    if not hops:
        return remote
    return hops[-min(trusted, len(hops))]


class SearchRateThrottle(SimpleRateThrottle):
    """SEARCH_RATE_LIMIT per client address, for anonymous and logged-in users alike."""

    scope = "search"

    def get_rate(self) -> str | None:
        return settings.SEARCH_RATE_LIMIT or None

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}


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
