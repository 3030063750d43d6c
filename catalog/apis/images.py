"""Catalog API: the public catalog for everyone; the whole catalog, uploads, edits, deletes
and the upsert of an outside catalog's items for staff with Django's model permissions on
CatalogImage (view, add, change, delete)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import QueryDict
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from catalog import items, schemas, selectors, services
from catalog.item_fields import InvalidItemField
from catalog.models import CatalogImage
from search.fetching import FetchPolicy
from search.imaging import ImageRejected, decode_base64
from search.limits import check_request_size, read_upload
from search.tags import InvalidTags
from visualsearch.errors import ApiError
from visualsearch.schemas import PictureFileField

WRITE_PERMISSIONS = {
    "POST": "catalog.add_catalogimage",
    "PUT": "catalog.change_catalogimage",
    "PATCH": "catalog.change_catalogimage",
    "DELETE": "catalog.delete_catalogimage",
}


def sees_whole_catalog(user) -> bool:
    """Staff with the view permission (or change, which lets them view in Django admin too)
    see every image and every field; others, the public catalog (active, indexed images and
    their public fields). An upload's answer follows the same rule."""
    return bool(
        user
        and user.is_active
        and user.is_staff
        and (
            user.has_perm("catalog.view_catalogimage")
            or user.has_perm("catalog.change_catalogimage")
        )
    )


class ReadOnlyOrModelPermission(BasePermission):
    """Reads for everyone (what they see is narrowed by `sees_whole_catalog`); writes for
    staff holding the model permission the method needs, as in Django admin."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        user = request.user
        needed = WRITE_PERMISSIONS.get(request.method)
        return bool(user and user.is_active and user.is_staff and needed and user.has_perm(needed))


class UpsertPermission(ReadOnlyOrModelPermission):
    """An upsert may add an image or change one, depending on what the catalog holds: it
    needs both permissions, so whether it is allowed never depends on that."""

    def has_permission(self, request, view) -> bool:
        if request.method != "PUT":
            return super().has_permission(request, view)
        user = request.user
        return bool(
            user
            and user.is_active
            and user.is_staff
            and user.has_perms(["catalog.add_catalogimage", "catalog.change_catalogimage"])
        )


class PublicImageSerializer(serializers.ModelSerializer):
    """What anyone may see of a catalog image: no status, internal errors or hashes."""

    # Declared rather than derived from the model's JSONField, so the schema says its type.
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    external_id = serializers.CharField(
        read_only=True,
        help_text="The outside catalog's id of the item this picture shows; empty for "
        "pictures uploaded here.",
    )
    link_url = serializers.CharField(
        read_only=True, help_text="Where the item lives (an http or https URL), or empty."
    )
    metadata = schemas.MetadataField(read_only=True, help_text="The item's metadata.")

    class Meta:
        model = CatalogImage
        fields = [
            "id",
            "title",
            "tags",
            "image_url",
            "thumbnail_url",
            "width",
            "height",
            "external_id",
            "link_url",
            "metadata",
        ]

    def get_image_url(self, image: CatalogImage) -> str:
        return self._absolute(image.image_url)

    def get_thumbnail_url(self, image: CatalogImage) -> str:
        return self._absolute(image.thumbnail_url)

    def _absolute(self, url: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request and url else url


@extend_schema_serializer(component_name="CatalogImage")
class ImageOutputSerializer(PublicImageSerializer):
    """Everything staff with the view permission see of a catalog image."""

    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    possible_duplicate = serializers.SerializerMethodField(
        help_text="Its nearest other image is active and at least DUPLICATE_SIMILARITY "
        "percent similar."
    )
    nearest_image_id = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="Its nearest other active image when last checked (at indexing); null "
        "before that, when there was none, or after it was deleted.",
    )
    nearest_similarity = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="Their similarity, 0-100 on the scale of search's `similarity`, not "
        "rounded; null when `nearest_image_id` is.",
    )

    class Meta:
        model = CatalogImage
        fields = [
            "id",
            "title",
            "tags",
            "image_url",
            "thumbnail_url",
            "width",
            "height",
            "external_id",
            "link_url",
            "metadata",
            "sha256",
            "status",
            "failure_reason",
            "embedding_model",
            "is_active",
            "created_at",
            "updated_at",
            "indexed_at",
            "possible_duplicate",
            "nearest_image_id",
            "nearest_similarity",
        ]

    def get_possible_duplicate(self, image: CatalogImage) -> bool:
        return selectors.image_is_possible_duplicate(image)


def _output_serializer(request):
    return ImageOutputSerializer if sees_whole_catalog(request.user) else PublicImageSerializer


class ImageListApi(APIView):
    permission_classes = [ReadOnlyOrModelPermission]

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=CatalogImage.Status.values, required=False)

    @extend_schema_serializer(component_name="ImageUpload")
    class InputSerializer(serializers.Serializer):
        image = PictureFileField()
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)
        tags = serializers.CharField(required=False, allow_blank=True, help_text="a, b, c")

    @extend_schema(
        operation_id="images_list",
        summary="List the catalog: the public part, or all of it for staff",
        parameters=[FilterSerializer, schemas.PAGE_PARAMETER],
        auth=schemas.ANYONE_OR_STAFF,
        responses={
            200: schemas.image_page(PublicImageSerializer, ImageOutputSerializer),
            **schemas.LIST_ERRORS,
        },
    )
    def get(self, request):
        # A plain dict, not the QueryDict: DRF reads an empty form value as "not sent", so
        # `?status=` would list everything where the schema says it is no status at all.
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        paginator = api_settings.DEFAULT_PAGINATION_CLASS()
        images = selectors.image_list(
            **filters.validated_data, public_only=not sees_whole_catalog(request.user)
        )
        page = paginator.paginate_queryset(images, request)
        data = _output_serializer(request)(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        summary="Add an image to the catalog (staff with the add permission)",
        request={"multipart/form-data": InputSerializer},
        responses={
            **schemas.upload_results(PublicImageSerializer, ImageOutputSerializer),
            **schemas.UPLOAD_ERRORS,
        },
    )
    def post(self, request):
        if "image" not in request.FILES:
            raise ApiError("missing_image", "Send the picture as the multipart field 'image'.")
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            fields = payload.validated_data
            image, created = services.image_create(
                file=fields["image"], title=fields.get("title", ""), tags=fields.get("tags", "")
            )
        except (ImageRejected, InvalidTags) as exc:
            raise ApiError(exc.code, exc.detail) from exc
        except services.StagingUnavailable as exc:
            raise ApiError(exc.code, exc.detail, 503) from exc
        # The same bytes may already be a hidden image: an uploader who may not view the
        # catalog sees only its public fields, as for an image they just added.
        body = _output_serializer(request)(image, context={"request": request}).data
        return Response(
            {**body, "duplicate": not created},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ImageDetailApi(APIView):
    permission_classes = [ReadOnlyOrModelPermission]
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class PatchSerializer(serializers.Serializer):
        # tags, link_url and metadata are cleaned by the services, as at every other door.
        title = serializers.CharField(
            max_length=200, required=False, allow_blank=True, allow_null=True
        )
        is_active = serializers.BooleanField(required=False, allow_null=True)  # null: keep

    @extend_schema(
        summary="One catalog image, as the list shows it to this client",
        auth=schemas.ANYONE_OR_STAFF,
        responses={
            200: schemas.image_as_seen(PublicImageSerializer, ImageOutputSerializer),
            **schemas.DETAIL_ERRORS,
        },
    )
    def get(self, request, image_id: int):
        image = self._get(image_id, public_only=not sees_whole_catalog(request.user))
        return Response(_output_serializer(request)(image, context={"request": request}).data)

    @extend_schema(
        summary="Change an image's title, tags, link, metadata or activity (staff with change)",
        description="Send only what changes. A change re-indexes from the cached embedding: "
        "no model runs. An image of an outside item is its source's: the next upsert or sync "
        "sets its title, tags, link and metadata again, but keeps a person's `is_active`.",
        request=schemas.IMAGE_PATCH_REQUEST,
        responses={200: ImageOutputSerializer, **schemas.PATCH_ERRORS},
    )
    def patch(self, request, image_id: int):
        image = self._get(image_id)
        data = _body(request)
        payload = self.PatchSerializer(data=_fields(request, data))
        payload.is_valid(raise_exception=True)
        changes = {**payload.validated_data, **_item_values(request, data)}
        if "title" in changes and changes["title"] is None:
            changes["title"] = ""
        if any(value is not None for value in changes.values()):
            try:
                image = services.image_update(image=image, **changes)
            except (InvalidTags, InvalidItemField) as exc:
                raise ApiError(exc.code, exc.detail) from exc
        return Response(ImageOutputSerializer(image, context={"request": request}).data)

    @extend_schema(
        summary="Delete an image, its hosted files and its vector (staff with delete)",
        responses={204: None, **schemas.DELETE_ERRORS},
    )
    def delete(self, request, image_id: int):
        services.image_delete(image=self._get(image_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _get(image_id: int, *, public_only: bool = False) -> CatalogImage:
        image = selectors.image_get(image_id, public_only=public_only)
        if image is None:
            raise ApiError("image_not_found", f"No catalog image has id {image_id}.", 404)
        return image


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
        "field left out is empty (`is_active` excepted). A picture whose bytes are new is "
        "stored, published and embedded, and the item's previous picture is deactivated "
        "(never deleted); the same bytes again are neither downloaded (for `image_url`, when "
        "its server answers the conditional request with 304), stored nor embedded.",
        parameters=[schemas.EXTERNAL_ID_PARAMETER],
        request=schemas.ITEM_UPSERT_REQUEST,
        responses={
            **schemas.item_upsert_results(ImageOutputSerializer),
            **schemas.UPSERT_ERRORS,
        },
    )
    def put(self, request, external_id: str):
        try:
            check_request_size(request)  # DRF reads JSON bodies without Django's size check
        except ImageRejected as exc:
            raise ApiError(exc.code, exc.detail) from exc
        data = _body(request)
        sent = _picture_fields(request, data)
        payload = self.InputSerializer(data=_fields(request, data))
        payload.is_valid(raise_exception=True)
        try:
            fields = items.ItemFields.cleaned(
                external_id=external_id,
                **payload.validated_data,
                **_item_values(request, data),
            )
            result = items.item_upsert(
                fields=fields, pictures=[_picture(sent)], policy=FetchPolicy.from_settings()
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


# --- Bodies of the writes: JSON, or a form ------------------------------------------------


def _body(request) -> Mapping:
    if not isinstance(request.data, Mapping):
        raise ApiError(
            "malformed_request",
            'Send a JSON object, e.g. {"title": "Blue mug", "link_url": "https://..."}.',
        )
    return request.data


def _fields(request, data: Mapping) -> dict[str, Any]:
    """What a serializer checks: the body without its files, one value per form field."""
    return {key: data.get(key) for key in data if key not in request.FILES}


def _item_values(request, data: Mapping) -> dict[str, Any]:
    """tags, link_url and metadata as sent, for ItemFields or the services to clean; a field
    left out is left out, null is empty. A form sends tags as "a, b" and metadata as JSON
    text."""
    values: dict[str, Any] = {}
    if "tags" in data:
        tags = data.get("tags")
        if not (
            tags is None
            or isinstance(tags, str)
            or (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags))
        ):
            raise ApiError(
                InvalidTags.code,
                'Send `tags` as a list of strings, ["beach", "summer"], or as "beach, summer".',
            )
        values["tags"] = tags or ""
    if "link_url" in data:
        values["link_url"] = data.get("link_url") or ""
    if "metadata" in data:
        metadata = data.get("metadata")
        if isinstance(data, QueryDict):
            metadata = _json_text(metadata)
        values["metadata"] = {} if metadata is None else metadata
    return values


def _json_text(text: object) -> object:
    if not text:
        return None
    try:
        if not isinstance(text, str):  # a file part
            raise ValueError(text)
        return json.loads(text)
    except ValueError:
        raise ApiError(
            "invalid_metadata",
            'In a form, send `metadata` as JSON text of an object, e.g. {"price": 12}.',
        ) from None


def _picture_fields(request, data: Mapping) -> dict[str, Any]:
    """The one picture source sent: {"file": ...}, {"image": base64} or {"image_url": ...}."""
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


class TagListApi(APIView):
    """The tags of searchable images with their counts, for the search page's filters."""

    permission_classes: list = []

    @extend_schema(
        summary="Tags of searchable images, with how many images carry each",
        responses={200: schemas.TAG_LIST},
    )
    def get(self, request):
        counts = selectors.searchable_tag_counts()
        return Response({"tags": [{"tag": tag, "count": count} for tag, count in counts]})
