"""OpenAPI pieces every API module shares: the error shape and how refusals are listed.

The schema at /api/schema/ is the API's contract; `tests/test_api_schema.py` checks that it
names every error code README.md documents, so a code added to one must go into the other.
"""

from __future__ import annotations

from drf_spectacular.serializers import PolymorphicProxySerializerExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers

# {status: {code: when the API answers it}}, as an endpoint documents its refusals.
ErrorCodes = dict[int, dict[str, str]]


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    """The body of every refusal (see `visualsearch.errors`)."""

    error = serializers.CharField(help_text="A stable code a client can branch on.")
    detail = serializers.CharField(help_text="One sentence that says what to do.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Only with `invalid_request`: the message for each field that was refused.",
    )


@extend_schema_field({"type": "string", "format": "binary", "minLength": 1})
class PictureFileField(serializers.FileField):
    """A picture sent as a multipart file. The schema says it is not empty; the field itself
    lets an empty file through, so that search.imaging refuses it with `empty_image` as at
    every other door (a JSON body's empty base64 included)."""

    def __init__(self, **kwargs):
        super().__init__(allow_empty_file=True, **kwargs)


# Public doors too: authentication runs before any view, so an unknown token is refused.
BAD_TOKEN: ErrorCodes = {
    403: {"authentication_failed": "the token is unknown or its user is inactive"},
}

# Codes every door that needs staff can answer: DRF's authentication and permission checks,
# as visualsearch.errors renames them. Session authentication comes first, so an anonymous
# client gets 403 (not 401, which would need a WWW-Authenticate challenge).
STAFF_ONLY: ErrorCodes = {
    403: {
        "not_authenticated": "no staff session and no `Authorization: Token <key>`",
        **BAD_TOKEN[403],
        "permission_denied": "a staff user without the model permission this method needs",
    },
}

# What search.imaging refuses, for queries and catalog uploads alike (one check path).
IMAGE_REFUSALS: ErrorCodes = {
    400: {
        "empty_image": "the image has no bytes",
        "not_an_image": "the bytes are not an image",
        "unsupported_format": "an image format other than JPEG (MPO included), PNG, WebP, "
        "GIF, BMP, TIFF, HEIC/HEIF, AVIF",
        "corrupt_image": "a truncated or damaged image",
        "image_too_large": "more than `IMAGE_MAX_BYTES`",
        "too_many_pixels": "more than `SEARCH_MAX_PIXELS` for a query, `IMAGE_MAX_PIXELS` "
        "for a catalog upload",
        "bad_dimensions": "one side more than 20 times the other",
    },
}

# Codes DRF's parsers answer before a view sees the body.
PARSED_BODY: ErrorCodes = {
    400: {"malformed_request": "the body does not parse"},
    415: {"unsupported_media_type": "a body that is not JSON or a multipart/urlencoded form"},
}


def merge_codes(*tables: ErrorCodes) -> ErrorCodes:
    merged: ErrorCodes = {}
    for table in tables:
        for status, codes in table.items():
            merged.setdefault(status, {}).update(codes)
    return merged


def error_responses(codes: ErrorCodes) -> dict[int, OpenApiResponse]:
    """One response per status: the Error shape, its codes listed in the description, and
    one example per code so Swagger UI shows each body a client can meet."""
    responses = {}
    for status, by_code in sorted(codes.items()):
        listed = "\n".join(f"- `{code}`: {when}" for code, when in by_code.items())
        responses[status] = OpenApiResponse(
            ErrorSerializer,
            description=f"`error` is one of:\n\n{listed}",
            examples=[
                OpenApiExample(code, summary=when, value={"error": code, "detail": "<what to do>"})
                for code, when in by_code.items()
            ],
        )
    return responses


class AnyOf(PolymorphicProxySerializer):
    """A body that matches at least one of `serializers`: OpenAPI's anyOf. oneOf would be
    wrong where one shape extends another (what staff see of an image is a superset of what
    anyone sees), since a staff body would then match both."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("resource_type_field_name", None)
        super().__init__(*args, **kwargs)


class AnyOfExtension(PolymorphicProxySerializerExtension):
    target_class = AnyOf
    priority = 0  # above the oneOf mapping drf-spectacular registers for its base class

    def map_serializer(self, auto_schema, direction):
        parts = self._get_implicit_sub_components(auto_schema, direction)
        return {"anyOf": [schema for _, schema in parts]}


def page_of(name: str, results: serializers.Field) -> serializers.Serializer:
    """DRF's PageNumberPagination envelope around `results`, for views that paginate by hand."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": results,
        },
    )


# --- /api/health/ (readiness), /api/health/ready/, /api/health/live/ --------------------

HEALTH_PARTS = ("database", "broker", "vector_store", "model", "beat")

HealthLiveSerializer = inline_serializer(
    name="HealthLive",
    fields={"status": serializers.CharField(help_text='Always "ok": the process answers.')},
)

# What the detail-bearing health paths refuse: an unknown API token (as every door), a wrong
# X-Health-Token, and an address that sent too many wrong ones.
HEALTH_REFUSALS: ErrorCodes = merge_codes(
    BAD_TOKEN,
    {
        403: {"bad_health_token": "`X-Health-Token` is not `HEALTH_TOKEN`"},
        429: {
            "throttled": "more than `HEALTH_TOKEN_TRIES_PER_MINUTE` wrong health tokens "
            "from this address in a minute"
        },
    },
)


def _part(name: str, **details: serializers.Field) -> serializers.Serializer:
    return inline_serializer(
        name=name,
        fields={
            "ok": serializers.BooleanField(),
            "error": serializers.CharField(
                required=False, help_text="Only when `ok` is false: what failed."
            ),
            **details,
        },
    )


HEALTH_STATUS = serializers.ChoiceField(choices=["ok", "degraded"])

HealthSummarySerializer = inline_serializer(
    name="HealthSummary",
    fields={
        "status": HEALTH_STATUS,
        "checks": inline_serializer(
            name="HealthChecks",
            fields={part: serializers.BooleanField() for part in HEALTH_PARTS},
        ),
    },
)

HealthDetailsSerializer = inline_serializer(
    name="HealthDetails",
    fields={
        "status": HEALTH_STATUS,
        "database": _part(
            "HealthDatabase",
            vendor=serializers.CharField(required=False),
            images=serializers.DictField(
                child=serializers.IntegerField(),
                required=False,
                help_text="How many catalog images are in each status.",
            ),
        ),
        "broker": _part("HealthBroker", transport=serializers.CharField(required=False)),
        "vector_store": _part(
            "HealthVectorStore",
            backend=serializers.CharField(required=False),
            count=serializers.IntegerField(required=False),
            dimension=serializers.IntegerField(required=False),
        ),
        "model": _part(
            "HealthModel",
            id=serializers.CharField(),
            loaded=serializers.BooleanField(),
            random_weights=serializers.BooleanField(),
            warning=serializers.CharField(required=False),
        ),
        "beat": _part(
            "HealthBeat",
            late=serializers.ListField(
                child=serializers.CharField(),
                required=False,
                help_text="Periodic tasks with no run for `HEALTH_BEAT_LATE_INTERVALS` of "
                "their intervals: celery beat, or every worker, has stopped.",
            ),
            tasks=serializers.DictField(
                child=inline_serializer(
                    name="HealthPeriodicTask",
                    fields={
                        "every_seconds": serializers.FloatField(),
                        "last_run_at": serializers.DateTimeField(allow_null=True),
                        "late": serializers.BooleanField(),
                    },
                ),
                required=False,
                help_text="Each periodic task of the beat schedule, by task name.",
            ),
        ),
    },
)

HEALTH_REPORT = PolymorphicProxySerializer(
    component_name="HealthReport",
    serializers=[HealthSummarySerializer, HealthDetailsSerializer],
    resource_type_field_name=None,
)
