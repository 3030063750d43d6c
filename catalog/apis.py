"""Catalog API: the public catalog for everyone; the whole catalog, uploads and deletes for
staff with Django's model permissions on CatalogImage (view, add, delete)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from catalog import schemas, selectors, services
from catalog.models import CatalogImage
from search.imaging import ImageRejected
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


class PublicImageSerializer(serializers.ModelSerializer):
    """What anyone may see of a catalog image: no status, internal errors or hashes."""

    # Declared rather than derived from the model's JSONField, so the schema says its type.
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = CatalogImage
        fields = ["id", "title", "tags", "image_url", "thumbnail_url", "width", "height"]

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
