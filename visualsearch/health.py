"""Health: is this process alive, and are the parts it depends on answering?

- GET /api/health/live/ (liveness): the process answers requests. It touches no
  dependency, not even the database: container and platform health checks restart or
  withhold a replica on it, and an outage of Redis or Pinecone is no reason to do either
  (searches by `image_id` and the page still work).
- GET /api/health/ready/ (readiness; /api/health/ answers the same, as it always did):
  the database, the broker and the vector store probed, and the periodic tasks' last runs
  read. The report is reused for HEALTH_CACHE_SECONDS, and one probe runs at a time per
  process: callers that arrive while it runs wait for it and share its answer. Each
  dependency has HEALTH_PROBE_TIMEOUT_SECONDS to answer, on a thread of its own, so a hung
  one holds no request thread longer; while its check still waits, no second one starts.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection, connections
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from catalog.pipeline.periodic import periodic_tasks_state
from catalog.selectors import catalog_status_counts
from search.embedding import EmbeddingOptions, encoder_is_loaded, model_id_for
from search.limits import client_key
from search.services import RANDOM_WEIGHTS_WARNING
from search.vectorstores import get_vector_store
from visualsearch import schemas
from visualsearch.errors import ApiError


def _process_started_at() -> datetime:
    """When this process started: from /proc on Linux, else when this module was loaded."""
    try:
        # Field 22 of /proc/self/stat, in clock ticks after boot; fields counted after the
        # command name, which may hold spaces and ends at the last ")".
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        stat = Path("/proc/stat").read_text().splitlines()
        boot = next(int(line.split()[1]) for line in stat if line.startswith("btime "))
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)
    except (OSError, ValueError, IndexError, StopIteration):
        return datetime.now(UTC)


# A periodic task is not late before this process has been up for a few of its intervals:
# a fresh deployment has had no time to run it (see catalog.pipeline.periodic).
STARTED_AT = _process_started_at()

# Readiness answers 503 when one of these fails: this replica cannot do its work without
# them. A late beat does not stop it from serving: reported, with a 200.
NEEDED_PARTS = ("database", "broker", "vector_store", "model")


def _check(probe: Callable[[], dict | None]) -> dict[str, Any]:
    try:
        return {"ok": True, **(probe() or {})}
    except Exception as exc:  # a health check reports failures, it does not raise them
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"vendor": connection.vendor, "images": catalog_status_counts()}


def _broker() -> dict:
    from visualsearch.celery import app

    timeout = settings.HEALTH_PROBE_TIMEOUT_SECONDS
    # One try, bounded by the probe's own timeout (kombu's retries took 6 s on a hung Redis).
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    with app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
        conn.ensure_connection(max_retries=0)
        return {"transport": conn.transport_cls}


def _vector_store() -> dict:
    store = get_vector_store()
    return {"backend": store.name, "count": store.count(), "dimension": store.dimension}


def _beat() -> dict:
    states = periodic_tasks_state(
        schedule=settings.CELERY_BEAT_SCHEDULE,
        late_after_intervals=settings.HEALTH_BEAT_LATE_INTERVALS,
        watching_since=STARTED_AT,
    )
    late = [state.name for state in states if state.late]
    report: dict[str, Any] = {
        "ok": not late,
        "late": late,
        "tasks": {
            state.name: {
                "every_seconds": state.every_seconds,
                "last_run_at": state.last_run_at.isoformat() if state.last_run_at else None,
                "late": state.late,
            }
            for state in states
        },
    }
    if late:
        report["error"] = (
            f"Periodic tasks late (no run for {settings.HEALTH_BEAT_LATE_INTERVALS} of their "
            f"intervals): {', '.join(late)}. Run celery beat, exactly one "
            "(`celery -A visualsearch beat`), and a worker on the "
            f"'{settings.CELERY_TASK_DEFAULT_QUEUE}' queue."
        )
    return report


def _model() -> dict:
    options = EmbeddingOptions.from_settings()
    report = {
        "id": model_id_for(options),
        "loaded": encoder_is_loaded(options),
        "random_weights": options.is_random,
    }
    if options.is_random:
        report["warning"] = RANDOM_WEIGHTS_WARNING
    return report


class _PartProbe:
    """Checks one dependency on a thread of its own, so that the caller waits no longer than
    its timeout; a check still waiting for its dependency is not joined by a second one."""

    def __init__(self, name: str, check: Callable[[], dict | None]):
        self.name = name
        self._check = check
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._result: dict[str, Any] | None = None

    def start(self) -> bool:
        """Start a check; False when the last one is still waiting for an answer."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._result = None
            self._started = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, name=f"health-{self.name}", daemon=True
            )
            self._thread.start()
            return True

    def _run(self) -> None:
        try:
            result = _check(self._check)
        finally:
            connections.close_all()  # this thread's own connections: it ends here
        with self._lock:
            self._result = result

    def result(self, *, deadline: float, started: bool, timeout: float) -> dict[str, Any]:
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._result is not None:
                return self._result
            waited = time.monotonic() - self._started
        if started:
            return {"ok": False, "error": f"TimeoutError: no answer within {timeout:g} s"}
        return {
            "ok": False,
            "error": "TimeoutError: still waiting for an answer to the check started "
            f"{waited:.0f} s ago",
        }


def _part_probes() -> dict[str, _PartProbe]:
    checks = {
        "database": _database,
        "broker": _broker,
        "vector_store": _vector_store,
        "beat": _beat,  # a read of the database, on a thread of its own like the others
    }
    return {name: _PartProbe(name, check) for name, check in checks.items()}


_probes = _part_probes()


def probe_dependencies() -> tuple[bool, dict[str, Any]]:
    """Probe every part now (each within HEALTH_PROBE_TIMEOUT_SECONDS, all at once)."""
    timeout = settings.HEALTH_PROBE_TIMEOUT_SECONDS
    # A dependency client that honours the timeout reports its own error, a moment later.
    deadline = time.monotonic() + timeout + 0.5
    probes = _probes
    started = {name: probe.start() for name, probe in probes.items()}
    results = {
        name: probe.result(deadline=deadline, started=started[name], timeout=timeout)
        for name, probe in probes.items()
    }
    report: dict[str, Any] = {
        "database": results["database"],
        "broker": results["broker"],
        "vector_store": results["vector_store"],
        "model": _check(_model),
        "beat": results["beat"],
    }
    ready = all(report[name]["ok"] for name in NEEDED_PARTS)
    healthy = ready and all(part["ok"] for part in report.values())
    return ready, {"status": "ok" if healthy else "degraded", **report}


class _SharedReport:
    """The last report, reused for HEALTH_CACHE_SECONDS; one probe in flight at a time, whose
    answer every caller that arrived while it ran receives."""

    def __init__(self):
        self._lock = threading.Lock()
        self._report: tuple[bool, dict[str, Any]] | None = None
        self._made_at = 0.0
        self._running: Future | None = None

    def get(self, make: Callable[[], tuple[bool, dict[str, Any]]], max_age: float):
        with self._lock:
            if self._report is not None and time.monotonic() - self._made_at < max_age:
                return self._report
            running, mine = self._running, self._running is None
            if mine:
                running = self._running = Future()
        if not mine:
            return running.result()
        try:
            report = make()
        except BaseException as exc:
            with self._lock:
                self._running = None
            running.set_exception(exc)
            raise
        with self._lock:
            self._report, self._made_at, self._running = report, time.monotonic(), None
        running.set_result(report)
        return report

    def forget(self) -> None:
        with self._lock:
            self._report = None


_shared_report = _SharedReport()


def readiness_report() -> tuple[bool, dict[str, Any]]:
    """(ready, report): ready is False when a part this replica needs is down."""
    return _shared_report.get(probe_dependencies, settings.HEALTH_CACHE_SECONDS)


def _forget_on_setting_change(**kwargs) -> None:
    """A report made under other settings must not answer for new ones (override_settings
    and tests change settings in a running process); nor may a check of the old
    dependencies, still waiting, hold back one of the new."""
    global _probes
    _shared_report.forget()
    _probes = _part_probes()


setting_changed.connect(_forget_on_setting_change)


def shallow(report: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see: up or not, part by part, without internal error text."""
    parts = {name: part["ok"] for name, part in report.items() if isinstance(part, dict)}
    return {"status": report["status"], "checks": parts}


class WrongHealthTokenThrottle(SimpleRateThrottle):
    """HEALTH_TOKEN_TRIES_PER_MINUTE wrong tokens per client address; only wrong ones count."""

    scope = "health_token"

    def get_rate(self) -> str:
        return f"{settings.HEALTH_TOKEN_TRIES_PER_MINUTE}/min"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_key(request)}

    def is_blocked(self, request) -> bool:
        """Whether this address has used up its tries, without counting this request."""
        self.key = self.get_cache_key(request, None)
        self.now = self.timer()
        self.history = [t for t in self.cache.get(self.key, []) if t > self.now - self.duration]
        return len(self.history) >= self.num_requests

    def count_wrong_token(self) -> None:
        self.throttle_success()  # remembers this request's time among the address's tries


def may_see_details(request) -> bool:
    """Staff (session or API token) and monitors holding HEALTH_TOKEN see the full report.
    A wrong token is refused (403 bad_health_token), and after HEALTH_TOKEN_TRIES_PER_MINUTE
    wrong ones an address is refused without a look at its token (429 throttled)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = request.headers.get("X-Health-Token", "")
    if not token:
        return False
    throttle = WrongHealthTokenThrottle()
    if throttle.is_blocked(request):
        wait = max(1, round(throttle.wait() or 1))
        refusal = ApiError(
            "throttled",
            f"Too many wrong health tokens from your address; try again in {wait} s.",
            status_code=429,
        )
        refusal.wait = wait  # DRF's exception handler sends it as Retry-After
        raise refusal
    expected = settings.HEALTH_TOKEN
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return True
    throttle.count_wrong_token()
    raise ApiError(
        "bad_health_token",
        "X-Health-Token does not match HEALTH_TOKEN: send the configured token, "
        "or no X-Health-Token header for the short status.",
        status_code=403,
    )


class LivenessApi(APIView):
    """200 while this process answers requests; nothing else is checked."""

    # No authentication (an API token would be looked up in the database) and JSON only
    # (the browsable API renders the user): liveness must answer with the database down.
    authentication_classes: list = []
    permission_classes: list = []
    renderer_classes = [JSONRenderer]

    @extend_schema(
        summary="Does this process answer? (liveness)",
        description="Checks no dependency, not even the database: for container and platform "
        "health checks, which restart or withhold a replica that fails it. Never redirected "
        "to HTTPS.",
        auth=[],
        responses={200: schemas.HealthLiveSerializer},
    )
    def get(self, request):
        return Response({"status": "ok"})


class ReadinessApi(APIView):
    """200 when the parts this replica needs answer, else 503; load balancers need only the
    status code. Probed at most once per HEALTH_CACHE_SECONDS per process."""

    @extend_schema(
        summary="Do the parts this deployment depends on answer? (readiness)",
        parameters=[
            OpenApiParameter(
                "X-Health-Token",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="`HEALTH_TOKEN`: see the details without a staff login.",
            )
        ],
        responses={
            200: OpenApiResponse(
                schemas.HEALTH_REPORT,
                description="The database, broker, vector store and model answer. Anyone "
                "gets `HealthSummary`; staff and holders of the health token get "
                '`HealthDetails`. `"status": "degraded"` with a 200: only periodic tasks '
                "are late (celery beat has stopped); this replica still serves. The report "
                "may be up to `HEALTH_CACHE_SECONDS` old.",
            ),
            503: OpenApiResponse(
                schemas.HEALTH_REPORT,
                description='A part this replica needs is down: `"status": "degraded"`.',
            ),
            **schemas.error_responses(schemas.HEALTH_REFUSALS),
        },
    )
    def get(self, request):
        details = may_see_details(request)
        ready, report = readiness_report()
        return Response(report if details else shallow(report), status=200 if ready else 503)


class HealthApi(ReadinessApi):
    """/api/health/: readiness, at the path monitors have always called."""
