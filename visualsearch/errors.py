"""One error shape for the whole API: {"error": "<stable_code>", "detail": "<what to do>"}."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ApiError(exceptions.APIException):
    """An error a client can act on; `code` is stable, `detail` says what to do."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, detail: str, status_code: int | None = None):
        super().__init__(detail=detail, code=code)
        self.error_code = code
        if status_code is not None:
            self.status_code = status_code


_CODES: dict[type[exceptions.APIException], tuple[str, str | None]] = {
    exceptions.ParseError: ("malformed_request", "Send a valid JSON body or multipart form."),
    exceptions.UnsupportedMediaType: (
        "unsupported_media_type",
        "Send application/json or multipart/form-data.",
    ),
    exceptions.NotAuthenticated: (
        "not_authenticated",
        "Log in as staff or send 'Authorization: Token <key>'.",
    ),
    exceptions.AuthenticationFailed: ("authentication_failed", None),
    exceptions.PermissionDenied: ("permission_denied", "This needs a staff account."),
    exceptions.NotFound: ("not_found", "No such resource; check the id."),
    exceptions.MethodNotAllowed: ("method_not_allowed", None),
    exceptions.NotAcceptable: ("not_acceptable", None),
    exceptions.Throttled: ("throttled", None),
}


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        return f"{field}: {_first_message(value)}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ApiError):
        body: dict[str, Any] = {"error": exc.error_code, "detail": str(exc.detail)}
    elif isinstance(exc, exceptions.ValidationError):
        body = {"error": "invalid_request", "detail": _first_message(exc.detail)}
        body["fields"] = exc.detail
    else:
        code, detail = next(
            ((c, d) for cls, (c, d) in _CODES.items() if isinstance(exc, cls)),
            ("error", None),
        )
        body = {"error": code, "detail": detail or _first_message(response.data.get("detail"))}
    response.data = body
    return response
