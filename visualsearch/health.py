"""GET /api/health/: is every part this deployment depends on answering?"""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.db import connection
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.selectors import catalog_status_counts
from search.embedding import EmbeddingOptions, encoder_is_loaded, model_id_for
from search.services import RANDOM_WEIGHTS_WARNING
from search.vectorstores import get_vector_store
from visualsearch import schemas


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


def shallow(report: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see: up or not, part by part, without internal error text."""
    parts = {name: part["ok"] for name, part in report.items() if isinstance(part, dict)}
    return {"status": report["status"], "checks": parts}


def may_see_details(request) -> bool:
    """Staff (session or API token) and monitors holding HEALTH_TOKEN see the full report."""
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = request.headers.get("X-Health-Token", "")
    return bool(settings.HEALTH_TOKEN) and hmac.compare_digest(
        token.encode(), settings.HEALTH_TOKEN.encode()
    )


class HealthApi(APIView):
    """200 when every part answers, else 503; load balancers need only the status code."""

    @extend_schema(
        summary="Is every part of this deployment answering?",
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
                description="Every part answers. Anyone gets `HealthSummary`; staff and "
                "holders of the health token get `HealthDetails`.",
            ),
            503: OpenApiResponse(
                schemas.HEALTH_REPORT, description='A part is down: `"status": "degraded"`.'
            ),
            **schemas.error_responses(schemas.BAD_TOKEN),
        },
    )
    def get(self, request):
        healthy, report = health_report()
        body = report if may_see_details(request) else shallow(report)
        return Response(body, status=200 if healthy else 503)
