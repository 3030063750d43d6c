"""POST /api/search/: a picture (or a catalog image's id) in, the most similar images out."""

from __future__ import annotations

import math
from collections.abc import Mapping

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.validators import ProhibitSurrogateCharactersValidator
from rest_framework.views import APIView

from search import fetching, schemas, services
from search.embedding import EmbeddingWeightsUnavailable
from search.imaging import ImageRejected, decode_base64
from search.limits import SearchRateThrottle, check_request_size, read_upload, throttled_detail
from search.tags import InvalidTags, tag_filter
from search.vectorstores import VectorStoreError
from visualsearch.errors import ApiError

# The largest id a database primary key can hold; a larger one is a client's mistake.
MAX_ID = 2**63 - 1


class Base64Field(serializers.CharField):
    """A CharField without DRF's check for surrogate characters, which walks the text one
    character at a time in Python: on a 10 MB picture's base64 that loop cost more than
    the model. `decode_base64` refuses any character that is not ASCII anyway."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            validator
            for validator in self.validators
            if not isinstance(validator, ProhibitSurrogateCharactersValidator)
        ]


class SearchApi(APIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    authentication_classes: list = []  # public and stateless: no session, so no CSRF check
    throttle_classes = [SearchRateThrottle]

    class InputSerializer(serializers.Serializer):
        image = Base64Field(
            required=False, allow_blank=True, allow_null=True, trim_whitespace=False
        )
        image_id = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
        url = serializers.CharField(
            required=False, allow_null=True, max_length=fetching.MAX_URL_LENGTH
        )
        top_k = serializers.IntegerField(required=False, min_value=1)
        per_picture = serializers.BooleanField(required=False)

    @extend_schema_serializer(component_name="SearchHit")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        title = serializers.CharField()
        image_url = serializers.SerializerMethodField()
        thumbnail_url = serializers.SerializerMethodField()
        score = serializers.SerializerMethodField()
        similarity = serializers.FloatField()
        external_id = serializers.CharField(
            help_text="The outside catalog's id of the item this picture shows; empty for "
            "pictures uploaded here."
        )
        link_url = serializers.CharField(
            help_text="Where the item lives (an http or https URL), or empty."
        )
        metadata = serializers.DictField(
            help_text="The item's public metadata: strings, numbers, booleans, lists of strings."
        )

        def get_image_url(self, hit) -> str:
            return self.context["request"].build_absolute_uri(hit.image_url)

        def get_thumbnail_url(self, hit) -> str:
            return self.context["request"].build_absolute_uri(hit.thumbnail_url)

        def get_score(self, hit) -> float:
            return round(hit.score, 6)

    def throttled(self, request, wait):
        raise ApiError("throttled", throttled_detail(wait or 1), 429)

    @extend_schema(
        summary="Find the catalog images most similar to a picture",
        request=schemas.SEARCH_REQUEST,
        responses={200: schemas.search_results(OutputSerializer), **schemas.SEARCH_ERRORS},
    )
    def post(self, request):
        try:
            # DRF reads JSON bodies without Django's size check; refuse before buffering.
            check_request_size(request)
        except ImageRejected as exc:
            raise _rejected(exc) from exc
        image_id, top_k, per_picture = self._validated(request)
        min_similarity = _min_similarity(request.data)
        tags = _tags(request.data)
        # Filtered in the vector store, so top_k still fills from the matching images.
        where = {"tags": tags} if tags else None
        try:
            if image_id is not None:
                outcome = services.search_similar_to_catalog_image(
                    image_id=image_id,
                    top_k=top_k,
                    where=where,
                    min_similarity=min_similarity,
                    per_picture=per_picture,
                )
            else:
                outcome = services.search_similar(
                    image_bytes=_image_bytes(request),
                    top_k=top_k,
                    where=where,
                    min_similarity=min_similarity,
                    per_picture=per_picture,
                )
        except ImageRejected as exc:
            raise _rejected(exc) from exc
        except services.QueryImageUnavailable as exc:
            status = 404 if exc.code == "image_not_found" else 409
            raise ApiError(exc.code, exc.detail, status) from exc
        except EmbeddingWeightsUnavailable as exc:
            raise ApiError("model_unavailable", str(exc), 503) from exc
        except VectorStoreError as exc:
            detail = f"The vector store could not be reached ({exc}); try again shortly."
            raise ApiError("vector_store_unavailable", detail, 503) from exc
        results = self.OutputSerializer(outcome.hits, many=True, context={"request": request})
        body = {"results": results.data, "model": outcome.model_id, "took_ms": outcome.took_ms}
        if outcome.warning:
            body["warning"] = outcome.warning
        return Response(body)

    def _validated(self, request) -> tuple[int | None, int, bool]:
        if not isinstance(request.data, Mapping):
            raise ApiError(
                "malformed_request",
                'Send a JSON object, e.g. {"image": "<base64 or data: URL>", "top_k": 12}.',
            )
        # A multipart file is read by _image_bytes; the serializer checks the other fields.
        fields = {k: v for k, v in request.data.items() if k not in request.FILES}
        payload = self.InputSerializer(data=fields)
        payload.is_valid()
        errors, data = payload.errors, payload.validated_data
        if "image" in errors:
            raise ApiError("invalid_base64", "image must be a base64 string or a data: URL.")
        if "image_id" in errors:
            raise ApiError("invalid_image_id", "image_id must be a catalog image's id.")
        if "url" in errors or "url" in request.FILES:
            raise ApiError(
                "url_not_allowed",
                f"url must be an http:// or https:// address of at most "
                f"{fetching.MAX_URL_LENGTH} characters.",
            )
        top_k = data.get("top_k", settings.SEARCH_DEFAULT_TOP_K)
        if "top_k" in errors or top_k > settings.SEARCH_MAX_TOP_K:
            raise ApiError(
                "invalid_top_k",
                f"top_k must be a whole number from 1 to {settings.SEARCH_MAX_TOP_K}.",
            )
        if "per_picture" in errors:
            raise ApiError("invalid_per_picture", "per_picture must be true or false.")
        has_image = data.get("image") is not None or "image" in request.FILES
        if has_image + ("image_id" in data) + (data.get("url") is not None) > 1:
            raise ApiError("ambiguous_query", "Send one of image, image_id or url, not more.")
        return data.get("image_id"), top_k, data.get("per_picture", False)


def _tags(data) -> list[str]:
    """`tags` from a JSON list of strings or a comma-separated form field."""
    try:
        return tag_filter(data.get("tags"))
    except InvalidTags as exc:
        raise ApiError(exc.code, exc.detail) from exc


def _min_similarity(data) -> float:
    """`min_similarity` from a JSON number or a form field: 0 to 100, default 0."""
    raw = data.get("min_similarity")
    if raw is None or raw == "":
        return 0.0
    try:
        if isinstance(raw, bool | list | dict):
            raise ValueError(raw)
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value <= 100:  # NaN fails this too
        raise ApiError(
            "invalid_min_similarity",
            "min_similarity must be a number from 0 to 100, on the scale of `similarity`.",
        )
    return value


def _image_bytes(request) -> bytes:
    upload = request.FILES.get("image")
    if upload is not None:
        return read_upload(upload)
    if request.data.get("url") is not None:
        return fetching.fetch_query_image(request.data["url"])
    text = request.data.get("image")
    if text is None:
        raise ImageRejected(
            "missing_image",
            'Send the picture as JSON {"image": "<base64 or data: URL>"}, as the multipart '
            "field 'image', by its address with "
            '{"url": "https://..."}, or search by a catalog image with {"image_id": <id>}.',
        )
    return decode_base64(text, max_bytes=settings.IMAGE_MAX_BYTES)


# Refusals that are not about the request's content; every other one is a 400.
_REJECTED_STATUS = {"url_search_disabled": 403, "url_fetch_busy": 503}


def _rejected(exc: ImageRejected) -> ApiError:
    error = ApiError(exc.code, exc.detail, _REJECTED_STATUS.get(exc.code))
    if isinstance(exc, fetching.FetchBusy):
        error.wait = exc.retry_after  # DRF's handler sends it as Retry-After
    return error
