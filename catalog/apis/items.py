"""PUT /api/images/by-external-id/{external_id}/: an outside catalog's item upserted by its
external id, through catalog.items as every other door that takes items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import QueryDict
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import items, services
from catalog.apis.bodies import item_values, request_body, serializer_fields
from catalog.apis.images import ImageOutputSerializer
from catalog.apis.permissions import UpsertPermission
from catalog.item_fields import InvalidItemField
from catalog.schemas.errors import UPSERT_ERRORS
from catalog.schemas.items import (
    EXTERNAL_ID_PARAMETER,
    item_upsert_request,
    item_upsert_results,
)
from search.fetching import FetchPolicy
from search.imaging import ImageRejected, decode_base64
from search.limits import check_request_size, read_upload
from search.tags import InvalidTags
from visualsearch.errors import ApiError

# An item's other pictures in one request. Each may be fetched (up to
# URL_FETCH_DEADLINE_SECONDS) and is held in memory until the item is written, one after
# another on the request's thread, so the count bounds a request's time and memory; 20
# covers a product's gallery. Larger galleries come in by feed sync (catalog.sync), which
# fetches on its own threads, outside any request.
MAX_ADDITIONAL_IMAGES = 20
ADDITIONAL_IMAGES = "additional_images"


class ItemApi(APIView):
    """An outside catalog's item, by its external id: created, brought up to date, or left
    as it is, doing heavy work only for a picture whose bytes changed (catalog.items)."""

    permission_classes = [UpsertPermission]
    parser_classes = [JSONParser, MultiPartParser]

    class InputSerializer(serializers.Serializer):
        # tags, link_url and metadata are cleaned by ItemFields, as at every other door.
        title = serializers.CharField(
            max_length=200, required=False, allow_blank=True, allow_null=True
        )
        is_active = serializers.BooleanField(required=False, allow_null=True)

    @extend_schema(
        operation_id="images_by_external_id_update",
        summary="Create or update an outside catalog's item by its external id (staff with "
        "add and change)",
        description="Idempotent: the same request twice leaves the catalog as once, the "
        "second answering `unchanged`. The body is the item as its source says it is now: a "
        "field left out is empty (`is_active` excepted). The item's pictures are its main "
        "picture (`image` or `image_url`, required) and up to "
        f"{MAX_ADDITIONAL_IMAGES} `additional_images`. A picture whose bytes are new is "
        "stored, published and embedded, and the pictures the item no longer lists are "
        "deactivated (never deleted); the same bytes again are neither downloaded (for a "
        "URL, when its server answers the conditional request with 304), stored nor "
        "embedded. Search answers with one result per item, its best-matching picture.",
        parameters=[EXTERNAL_ID_PARAMETER],
        request=item_upsert_request(max_additional_images=MAX_ADDITIONAL_IMAGES),
        responses={
            **item_upsert_results(ImageOutputSerializer),
            **UPSERT_ERRORS,
        },
    )
    def put(self, request, external_id: str):
        try:
            check_request_size(request)  # DRF reads JSON bodies without Django's size check
        except ImageRejected as exc:
            raise ApiError(exc.code, exc.detail) from exc
        data = request_body(request)
        sent = _picture_fields(request, data)
        additional = _additional_images(request, data)
        payload = self.InputSerializer(data=serializer_fields(request, data))
        payload.is_valid(raise_exception=True)
        try:
            fields = items.ItemFields.cleaned(
                external_id=external_id,
                **payload.validated_data,
                **item_values(request, data),
            )
            pictures = [
                _picture(sent),
                *(_additional_picture(value, n) for n, value in enumerate(additional, 1)),
            ]
            result = items.item_upsert(
                fields=fields, pictures=pictures, policy=FetchPolicy.from_settings()
            )
        except (ImageRejected, InvalidTags, InvalidItemField) as exc:
            raise ApiError(exc.code, exc.detail) from exc
        except services.StagingUnavailable as exc:
            raise ApiError(exc.code, exc.detail, 503) from exc
        except items.ItemChangedMeanwhile as exc:
            raise ApiError(exc.code, exc.detail, 409) from exc
        body = {
            "outcome": result.outcome.value,
            "changed": result.changed,
            "external_id": fields.external_id,
            "images": ImageOutputSerializer(
                result.images, many=True, context={"request": request}
            ).data,
        }
        created = result.outcome is items.Outcome.CREATED
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _picture_fields(request, data: Mapping) -> dict[str, Any]:
    """The main picture's one source: {"file": ...}, {"image": base64} or {"image_url": ...}."""
    sent: dict[str, Any] = {}
    if "image" in request.FILES:
        sent["file"] = request.FILES["image"]
    for name in ("image", "image_url"):
        if name not in request.FILES and data.get(name) is not None:
            sent[name] = data.get(name)
    if not sent:
        raise ApiError(
            "missing_image",
            "Send the picture as the multipart file field 'image', as base64 in "
            '{"image": "<base64 or data: URL>"}, or by its address in '
            '{"image_url": "https://..."}.',
        )
    if len(sent) > 1:
        raise ApiError("ambiguous_picture", "Send one of `image` and `image_url`, not both.")
    return sent


def _picture(sent: dict[str, Any]) -> items.PictureSource:
    """Raises ImageRejected for a picture that cannot be read (too large, bad base64)."""
    if "file" in sent:
        return items.PictureSource(data=read_upload(sent["file"]), name=sent["file"].name or "")
    if "image" in sent:
        return items.PictureSource(
            data=decode_base64(sent["image"], max_bytes=settings.IMAGE_MAX_BYTES)
        )
    url = sent["image_url"]
    if not isinstance(url, str) or not url:
        raise ImageRejected(
            "url_not_allowed", "Send `image_url` as an http:// or https:// address."
        )
    return items.PictureSource(url=url, name=url)


def _additional_images(request, data: Mapping) -> list[str | UploadedFile]:
    """The item's other pictures as sent, in order: in JSON, strings (URLs or base64); in a
    form, file parts. Checked for shape and count before any is read."""
    if isinstance(data, QueryDict):  # a form
        if any(isinstance(value, str) for value in data.getlist(ADDITIONAL_IMAGES)):
            raise ApiError(
                "invalid_additional_images",
                "In a form, send each additional picture as a file part `additional_images`; "
                "to name pictures by URL, send JSON.",
            )
        sent: object = request.FILES.getlist(ADDITIONAL_IMAGES)
    else:
        sent = data.get(ADDITIONAL_IMAGES)
        if sent is None:
            sent = []
        if not (isinstance(sent, list) and all(isinstance(value, str) for value in sent)):
            raise ApiError(
                "invalid_additional_images",
                "Send `additional_images` as a list of strings, each an http(s) URL or a "
                'picture as base64 or a data: URL: ["https://shop.example/42-back.jpg"].',
            )
    if len(sent) > MAX_ADDITIONAL_IMAGES:
        raise ApiError(
            "too_many_pictures",
            f"Send at most {MAX_ADDITIONAL_IMAGES} `additional_images` besides the main "
            f"picture (this request has {len(sent)}); list a larger gallery in a catalog feed.",
        )
    return sent


def _additional_picture(value: str | UploadedFile, position: int) -> items.PictureSource:
    """One of `additional_images`: a file part, an http(s) URL, or base64 (a data: URL
    included). Base64 holds no ':', so a string with one, other than a data: URL, is a URL.
    Raises ImageRejected, saying which picture, for one that cannot be read."""
    try:
        if isinstance(value, UploadedFile):
            return items.PictureSource(data=read_upload(value), name=value.name or "")
        if ":" in value and not value.lstrip().lower().startswith("data:"):
            return items.PictureSource(url=value, name=value)
        return items.PictureSource(data=decode_base64(value, max_bytes=settings.IMAGE_MAX_BYTES))
    except ImageRejected as exc:
        raise ImageRejected(
            exc.code, f"`additional_images` picture {position}: {exc.detail}"
        ) from exc
