"""Checks of the deployment settings (`manage.py check --deploy`; W002 at every check).

The production variables of docs/deploy.md pass them with no warning
(tests/test_deploy_settings.py).
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

# Backends whose entries live in one process: each gunicorn process, each replica, keeps its
# own count of a client's searches (N processes: N times the limit), and a dummy cache
# keeps none at all.
PER_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}


@register(Tags.security, Tags.caches, deploy=True)
def rate_limit_has_a_shared_cache(app_configs, **kwargs) -> list[Error]:
    backend = settings.CACHES["default"]["BACKEND"]
    if settings.SEARCH_RATE_LIMIT and backend in PER_PROCESS_CACHES:
        return [
            Error(
                f"SEARCH_RATE_LIMIT ({settings.SEARCH_RATE_LIMIT}) is counted in a per-process"
                f" cache ({backend.rsplit('.', 1)[-1]}): every web process and replica keeps"
                " its own count, so a client gets the limit once per process.",
                hint="Set CACHE_URL to a Redis every web process reaches (e.g."
                " redis://redis:6379/1), or SEARCH_RATE_LIMIT= (empty) to turn the limit off.",
                id="visualsearch.E001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def https_has_a_proxy_to_say_so(app_configs, **kwargs) -> list[Warning]:
    if settings.SECURE_SSL_REDIRECT and not settings.TRUSTED_PROXY_NETWORKS:
        return [
            Warning(
                "HTTPS=true with no TRUSTED_PROXY_NETWORKS: behind a TLS-terminating proxy"
                " every request arrives as plain HTTP and is redirected to https:// again,"
                " forever.",
                hint="Set TRUSTED_PROXY_NETWORKS to the networks the proxy connects from"
                " (e.g. 10.0.0.0/8), so that its X-Forwarded-Proto is believed. Ignore this"
                " only if the app itself serves TLS.",
                id="visualsearch.W001",
            )
        ]
    return []


@register(Tags.security)
def proxy_networks_leave_no_forged_hop(app_configs, **kwargs) -> list[Warning]:
    """Hops are read from the right while they are in TRUSTED_PROXY_NETWORKS: networks that
    cover every address reach the client's own, forged, left-hand entries."""
    everyone = [
        network
        for network in settings.TRUSTED_PROXY_NETWORKS
        if ipaddress.ip_network(network, strict=False).prefixlen == 0
    ]
    if everyone and not settings.TRUSTED_PROXIES:
        return [
            Warning(
                f"TRUSTED_PROXY_NETWORKS holds {', '.join(everyone)} and TRUSTED_PROXIES is 0:"
                " every X-Forwarded-For hop counts as a proxy, so a client chooses its own"
                " address by writing the header.",
                hint="Set TRUSTED_PROXIES to the number of proxies in front of the app"
                " (1 for one edge proxy), or name the proxies' own networks.",
                id="visualsearch.W002",
            )
        ]
    return []
