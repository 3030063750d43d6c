"""One error shape for the whole API: {"error": "<stable_code>", "detail": "<what to do>"}."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
)
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
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
    exceptions.NotAcceptable: (
        "not_acceptable",
        "The API answers JSON only: accept application/json (or */*).",
    ),
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
    # DRF answers Django's own Http404 (an unknown `?format=`, a get_object_or_404) and
    # PermissionDenied as its NotFound and PermissionDenied; give them those codes too.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    # A refusal is JSON even where the view renders something else (the schema's YAML, the
    # docs' HTML): DRF renders the answer with the request's negotiated renderer.
    request = context.get("request")
    if request is not None:
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
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


# --- Answers Django gives before or after DRF: the same shape under /api/ -----------------
# DRF shapes what its views raise (above). What Django itself answers (an unknown path, a
# refused Host, a form too big to read, an uncaught exception) would be an HTML page; under
# /api/ it is the same JSON shape, so a client can parse every answer of the API.


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def error_response(code: str, detail: str, status_code: int) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status_code)


def _is_endpoint(request: HttpRequest, path: str) -> bool:
    try:
        match = resolve(path, getattr(request, "urlconf", None))
    except Resolver404:
        return False
    return match.func is not api_not_found


@csrf_exempt  # it changes nothing, and CSRF's refusal would be an HTML page
def api_not_found(request: HttpRequest) -> HttpResponse:
    """Any path under /api/ that no endpoint takes (the last API URL pattern)."""
    if not request.path_info.endswith("/") and _is_endpoint(request, request.path_info + "/"):
        if request.method in ("GET", "HEAD"):  # as Django's APPEND_SLASH would
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
        # A redirect would lose the body, so say where to send it instead.
        detail = f"API paths end with a slash: send this to {request.path}/."
    else:
        detail = "No API endpoint at this path; /api/schema/ lists them."
    return error_response("not_found", detail, 404)


_BAD_REQUEST_DETAILS: dict[type[Exception], str] = {
    DisallowedHost: "The Host header names a host this server does not serve; use its address.",
    TooManyFieldsSent: "The form has more fields than the server reads; send fewer.",
    TooManyFilesSent: "The form has more files than the server reads; send fewer.",
    RequestDataTooBig: "The body is larger than the server reads; send a smaller one.",
}


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: what Django refuses before a view runs (SuspiciousOperation)."""
    if not is_api_request(request):
        return defaults.bad_request(request, exception)
    detail = next(
        (text for cls, text in _BAD_REQUEST_DETAILS.items() if isinstance(exception, cls)),
        "The request could not be read; check it and send it again.",
    )
    return error_response("bad_request", detail, 400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: Django's own PermissionDenied (DRF views answer theirs above)."""
    if not is_api_request(request):
        return defaults.permission_denied(request, exception)
    return error_response("permission_denied", _CODES[exceptions.PermissionDenied][1], 403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: an Http404 raised outside DRF under /api/."""
    if not is_api_request(request):
        return defaults.page_not_found(request, exception)
    return error_response("not_found", _CODES[exceptions.NotFound][1], 404)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an uncaught exception; logged (and reported) by Django, never shown."""
    if not is_api_request(request):
        return defaults.server_error(request)
    return error_response(
        "server_error",
        "Something failed on the server; try again, and report it if it keeps failing.",
        500,
    )
