"""Middleware for what every answer shares: whose forwarded headers to believe, and the
Content-Security-Policy header."""

from __future__ import annotations

import functools
import logging

from django.conf import settings

from search.limits import FORWARDED_HEADERS, peer_is_trusted_proxy

logger = logging.getLogger(__name__)


class ProxyHeadersMiddleware:
    """Drops X-Forwarded-For, -Proto, -Host, -Port and Forwarded unless the connection comes
    from TRUSTED_PROXY_NETWORKS.

    First in MIDDLEWARE: Django's SecurityMiddleware believes SECURE_PROXY_SSL_HEADER from
    any peer, so a client that reached the app's port directly, past the proxy, could
    otherwise say it used HTTPS. When such a header says HTTPS while redirects to HTTPS are
    on, the peer is most likely the TLS proxy itself, left out of TRUSTED_PROXY_NETWORKS:
    every request it forwards is redirected to itself. That is logged, once per peer.
    """

    # Peers already logged about; bounded, since any client can make a line.
    warned_peers: set[str] = set()
    MAX_WARNED_PEERS = 16

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not peer_is_trusted_proxy(request):
            protocol = request.META.get("HTTP_X_FORWARDED_PROTO", "")
            for header in FORWARDED_HEADERS:
                request.META.pop(header, None)
            if protocol.strip().lower().startswith("https") and settings.SECURE_SSL_REDIRECT:
                self.warn_once(request.META.get("REMOTE_ADDR", ""))
        return self.get_response(request)

    @classmethod
    def warn_once(cls, peer: str) -> None:
        if peer in cls.warned_peers or len(cls.warned_peers) >= cls.MAX_WARNED_PEERS:
            return
        cls.warned_peers.add(peer)
        logger.warning(
            "X-Forwarded-Proto: https from %s ignored: that address is not in"
            " TRUSTED_PROXY_NETWORKS. If it is your TLS proxy, every request it forwards is"
            " redirected to HTTPS again, forever: add its network to TRUSTED_PROXY_NETWORKS.",
            peer,
        )


class ContentSecurityPolicyMiddleware:
    """Sends CONTENT_SECURITY_POLICY with every answer that has none of its own.

    The admin and the API docs get the same policy with inline styles allowed: the admin's
    templates set style attributes, and Swagger UI's page has a <style> block. Scripts stay
    'self' everywhere (the docs page loads its setup script from /api/docs/?script).
    Under DEBUG, error pages go without it: Django's debug pages are inline scripts and
    styles.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if not policy or "Content-Security-Policy" in response:
            return response
        if settings.DEBUG and response.status_code >= 400:
            return response
        if allows_inline_styles(request):
            policy = with_inline_styles(policy)
        response["Content-Security-Policy"] = policy
        return response


def allows_inline_styles(request) -> bool:
    match = getattr(request, "resolver_match", None)
    return match is not None and ("admin" in match.namespaces or match.view_name == "api:docs")


@functools.lru_cache(maxsize=8)
def with_inline_styles(policy: str) -> str:
    """`policy` with 'unsafe-inline' added to the directives that govern styles."""
    directives = [part.split() for part in policy.split(";") if part.strip()]
    names = [directive[0].lower() for directive in directives]
    style_names = {"style-src", "style-src-elem", "style-src-attr"}
    if not style_names & set(names):
        if "default-src" not in names:
            return policy  # nothing restricts styles
        directives.append(["style-src", *directives[names.index("default-src")][1:]])
        names.append("style-src")
    for name, directive in zip(names, directives, strict=True):
        if name in style_names and "'unsafe-inline'" not in directive:
            # 'none' may only stand alone.
            directive[1:] = [source for source in directive[1:] if source != "'none'"]
            directive.append("'unsafe-inline'")
    return "; ".join(" ".join(directive) for directive in directives)
