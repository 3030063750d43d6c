"""GET /api/health/: is every part this deployment depends on answering?"""

from __future__ import annotations

from typing import Any

from django.db import connection
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.selectors import catalog_status_counts
from search.embedding import EmbeddingOptions, encoder_is_loaded, model_id_for
from search.services import RANDOM_WEIGHTS_WARNING
from search.vectorstores import get_vector_store


def _check(probe) -> dict[str, Any]:
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

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        return {"transport": conn.transport_cls}


def _vector_store() -> dict:
    store = get_vector_store()
    return {"backend": store.name, "count": store.count(), "dimension": store.dimension}


def health_report() -> tuple[bool, dict[str, Any]]:
    options = EmbeddingOptions.from_settings()
    report: dict[str, Any] = {
        "database": _check(_database),
        "broker": _check(_broker),
        "vector_store": _check(_vector_store),
        "model": {
            "ok": True,
            "id": model_id_for(options),
            "loaded": encoder_is_loaded(options),
            "random_weights": options.is_random,
        },
    }
    if options.is_random:
        report["model"]["warning"] = RANDOM_WEIGHTS_WARNING
    healthy = all(part["ok"] for part in report.values())
    return healthy, {"status": "ok" if healthy else "degraded", **report}


class HealthApi(APIView):
    authentication_classes: list = []

    def get(self, request):
        healthy, report = health_report()
        return Response(report, status=200 if healthy else 503)
