"""The catalog's images: the list (public, or whole for staff), uploads, one image, its
edits and its deletion."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from catalog import selectors, services
from catalog.apis.bodies import item_values, request_body, serializer_fields
from catalog.apis.permissions import ReadOnlyOrModelPermission, sees_whole_catalog
from catalog.item_fields import InvalidItemField
from catalog.models import CatalogImage
from catalog.schemas.errors import (
    DELETE_ERRORS,
    DETAIL_ERRORS,
    LIST_ERRORS,
    PATCH_ERRORS,
    UPLOAD_ERRORS,
)
from catalog.schemas.images import (
    ANYONE_OR_STAFF,
    IMAGE_PATCH_REQUEST,
    PAGE_PARAMETER,
    image_as_seen,
    image_page,
    upload_results,
)
from catalog.schemas.shared import MetadataField
from search.imaging import ImageRejected
from search.tags import InvalidTags
from visualsearch.errors import ApiError
from visualsearch.schemas import PictureFileField


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
    metadata = MetadataField(read_only=True, help_text="The item's metadata.")

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
            *PublicImageSerializer.Meta.fields,
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
        parameters=[FilterSerializer, PAGE_PARAMETER],
        auth=ANYONE_OR_STAFF,
        responses={
            200: image_page(PublicImageSerializer, ImageOutputSerializer),
            **LIST_ERRORS,
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
            **upload_results(PublicImageSerializer, ImageOutputSerializer),
            **UPLOAD_ERRORS,
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
        auth=ANYONE_OR_STAFF,
        responses={
            200: image_as_seen(PublicImageSerializer, ImageOutputSerializer),
            **DETAIL_ERRORS,
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
        request=IMAGE_PATCH_REQUEST,
        responses={200: ImageOutputSerializer, **PATCH_ERRORS},
    )
    def patch(self, request, image_id: int):
        image = self._get(image_id)
        data = request_body(request)
        payload = self.PatchSerializer(data=serializer_fields(request, data))
        payload.is_valid(raise_exception=True)
        changes = {**payload.validated_data, **item_values(request, data)}
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
        responses={204: None, **DELETE_ERRORS},
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
