"""The OpenAPI description of POST /api/search/: its three request shapes and its refusals."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiRequest, inline_serializer
from rest_framework import serializers

from search.fetching import MAX_URL_LENGTH
from visualsearch.schemas import (
    IMAGE_REFUSALS,
    PARSED_BODY,
    PictureFileField,
    error_responses,
    merge_codes,
)

# The largest id a database primary key can hold, as search.apis checks.
MAX_ID = 2**63 - 1


def _url() -> serializers.CharField:
    return serializers.CharField(
        required=False,
        max_length=MAX_URL_LENGTH,
        help_text="An http:// or https:// address of the picture, fetched by the server. "
        "Hosts that resolve to a non-public address (loopback, private, link-local) are "
        "refused; at most 3 redirects, each checked again.",
    )


def _min_similarity() -> serializers.FloatField:
    return serializers.FloatField(
        required=False,
        min_value=0,
        max_value=100,
        help_text="Leave out matches whose `similarity` is below this (0-100); default 0.",
    )


def _tags(form: bool) -> serializers.Field:
    help_text = (
        "Only images carrying at least one of these tags (filtered in the vector store, so "
        "`top_k` still fills from them). Up to 50 tags of up to 100 characters."
    )
    if form:
        return serializers.CharField(required=False, help_text=f"Comma-separated. {help_text}")
    return serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, help_text=help_text
    )


def _per_picture() -> serializers.BooleanField:
    return serializers.BooleanField(
        required=False,
        help_text="Results are per item by default: pictures of one outside item (the same "
        "`external_id`) make one result, its best-matching picture, and `top_k` counts "
        "items. True: every picture is its own result (a curator's view).",
    )


def _top_k() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.SEARCH_MAX_TOP_K,
        help_text=f"How many results; defaults to {settings.SEARCH_DEFAULT_TOP_K}.",
    )


def _search_by_text(name: str, *, form: bool) -> serializers.Serializer:
    """JSON and urlencoded bodies carry the picture as text; a form's tags are one
    comma-separated field, as for multipart."""
    return inline_serializer(
        name=name,
        fields={
            "image": serializers.CharField(
                required=False,
                help_text="The picture as base64, or a base64 `data:` URL. Send one of "
                "`image`, `image_id` or `url`.",
            ),
            "image_id": serializers.IntegerField(
                required=False,
                min_value=1,
                max_value=MAX_ID,
                help_text="Search by this catalog image's stored embedding instead of a "
                "picture; the image (and the rest of its item) is left out of its own results.",
            ),
            "url": _url(),
            "top_k": _top_k(),
            "min_similarity": _min_similarity(),
            "tags": _tags(form),
            "per_picture": _per_picture(),
        },
    )


_search_by_file = inline_serializer(
    name="SearchUpload",
    fields={
        "image": PictureFileField(
            required=False, help_text="The picture's bytes. Send this or `url`."
        ),
        "url": _url(),
        "top_k": _top_k(),
        "min_similarity": _min_similarity(),
        "tags": _tags(form=True),
        "per_picture": _per_picture(),
    },
)

SEARCH_REQUEST = {
    "application/json": OpenApiRequest(
        _search_by_text("SearchQuery", form=False),
        examples=[
            OpenApiExample("By picture", value={"image": "data:image/jpeg;base64,/9j/4AAQ…"}),
            OpenApiExample("By catalog image", value={"image_id": 42, "top_k": 12}),
            OpenApiExample("By URL", value={"url": "https://example.com/cup.jpg"}),
        ],
    ),
    "multipart/form-data": _search_by_file,
    "application/x-www-form-urlencoded": _search_by_text("SearchForm", form=True),
}


def search_results(hit: type[serializers.Serializer]) -> serializers.Serializer:
    return inline_serializer(
        name="SearchResults",
        fields={
            "results": hit(many=True, help_text="Most similar first."),
            "model": serializers.CharField(help_text="The model that made the vectors."),
            "took_ms": serializers.FloatField(),
            "warning": serializers.CharField(
                required=False, help_text="Present when the model runs with `random` weights."
            ),
        },
    )


SEARCH_ERRORS = error_responses(
    merge_codes(
        {
            400: {
                "missing_image": "no `image`, `image_id` or `url` field",
                "invalid_base64": "`image` is not base64 or a base64 `data:` URL",
            },
        },
        IMAGE_REFUSALS,
        PARSED_BODY,
        {
            400: {
                "invalid_top_k": "`top_k` is not a whole number from 1 to `SEARCH_MAX_TOP_K`",
                "invalid_min_similarity": "`min_similarity` is not a number from 0 to 100",
                "invalid_tags": "`tags` is not a list of up to 50 tags of up to 100 characters",
                "malformed_request": "the body does not parse, or the JSON is not an object "
                "(`[]`, `null`, `12`)",
                "invalid_image_id": "`image_id` is not a whole number from 1 to 2⁶³-1",
                "ambiguous_query": "more than one of `image`, `image_id` and `url` was sent",
                "invalid_per_picture": "`per_picture` is not true or false",
                "url_not_allowed": "`url` is not an http(s) URL, carries a user or password, "
                "names a port other than `URL_FETCH_PORTS` (80 and 443), or its host (or a "
                "redirect's) resolves to a loopback, private, link-local, multicast or "
                "reserved address",
                "url_fetch_failed": "the URL's host did not resolve, the connection failed "
                "(one detail for refused, reset, timed out or TLS), the whole fetch passed "
                "`URL_FETCH_DEADLINE_SECONDS`, it answered other than 2xx, or redirected more "
                "than 3 times",
            },
            403: {"url_search_disabled": "`SEARCH_BY_URL` is false"},
            404: {
                "image_not_found": "no searchable (active, indexed) catalog image has that "
                "`image_id`: unknown and hidden ids get the same answer",
            },
            409: {
                "image_not_indexed": "that image is searchable, but its embedding is from "
                "other weights (the model changed; a reindex brings it up to date)",
            },
            429: {
                "throttled": "more than `SEARCH_RATE_LIMIT` searches; the detail says when "
                "to retry",
            },
            503: {
                "model_unavailable": "the weights could not be loaded (the detail says what "
                "to set)",
                "vector_store_unavailable": "the vector store could not be reached",
                "url_fetch_busy": "a `url` search while this process already fetches "
                "`URL_FETCH_MAX_IN_FLIGHT` URLs; `Retry-After` says when a slot frees",
            },
        },
    )
)
