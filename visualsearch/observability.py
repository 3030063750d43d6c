"""What operators see: JSON log lines (LOG_FORMAT=json) and optional Sentry (SENTRY_DSN).

With LOG_FORMAT=json every log record is one JSON object on one line, and two kinds of
records are added that a log platform can aggregate: one per HTTP request (logger
`visualsearch.request`) and one per Celery task (logger `visualsearch.task`), each with its
duration. In text mode neither is added: gunicorn's access log and Celery's own
"Task ... succeeded in" lines already say the same thing to a person reading a terminal.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery.signals import task_postrun, task_prerun
from django.conf import settings

request_logger = logging.getLogger("visualsearch.request")
task_logger = logging.getLogger("visualsearch.task")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is data.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold (a Path, a UUID) is written as text
        # rather than losing the whole line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def _milliseconds_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


class RequestLogMiddleware:
    """Logs one record per request with its method, path, status, duration and client.

    First in MIDDLEWARE, so the duration includes the other middleware and the record is
    written for HTTPS redirects and refusals too.
    """

    def __init__(self, get_response):
        # Imported here, not at the top: this module is imported before settings are.
        from search.limits import client_ip  # the one reading of X-Forwarded-For

        self.get_response = get_response
        self.client_ip = client_ip

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": _milliseconds_since(start),
            "client_ip": self.client_ip(request),
        }
        request_logger.info(
            "%(method)s %(path)s %(status)s %(duration_ms)sms", fields, extra=fields
        )
        return response


# Task start times by task id; a pool process runs one task at a time, so this holds only
# the tasks in flight.
_task_starts: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id=None, **kwargs) -> None:
    if settings.LOG_FORMAT == "json":
        _task_starts[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **kwargs) -> None:
    """One record per Celery task, in a worker or run eagerly; read at each task, not at
    import, because this module is imported (by visualsearch.celery) before settings are."""
    if settings.LOG_FORMAT != "json":
        return
    start = _task_starts.pop(task_id, None)
    fields = {
        "task": getattr(task, "name", None),
        "task_id": task_id,
        "state": state,
        "duration_ms": _milliseconds_since(start) if start is not None else None,
    }
    task_logger.info("%(task)s[%(task_id)s] %(state)s %(duration_ms)sms", fields, extra=fields)


def sentry_init(*, dsn: str, environment: str, traces_sample_rate: float) -> None:
    """Send unhandled errors of web requests and Celery tasks to Sentry.

    Called from settings, as Sentry's Django guide does, so that errors raised while Django
    starts are reported too. No personal data (user ids, IPs, cookies) is sent.
    """
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,
        integrations=[DjangoIntegration(), CeleryIntegration()],
    )
