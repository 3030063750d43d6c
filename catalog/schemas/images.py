"""The shapes of the catalog's images: what anyone and what staff see, pages of them, an
upload's result, and a PATCH's body."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers

from catalog.schemas.shared import (
    Shape,
    is_active_input,
    link_url_input,
    metadata_input,
    tags_input,
    title_input,
)
from visualsearch.schemas import AnyOf, page_of

PAGE_PARAMETER = OpenApiParameter(
    "page", OpenApiTypes.INT, description="1-based; a page past the end is `404 not_found`."
)

# Reads need no login (drf-spectacular cannot tell from ReadOnlyOrModelPermission), but a
# staff session or token sees more.
ANYONE_OR_STAFF = [{"cookieAuth": []}, {"tokenAuth": []}, {}]


def image_as_seen(public: Shape, staff: Shape, *, many: bool = False) -> AnyOf:
    """Anyone sees `public`; staff with the view permission see `staff`, a superset."""
    return AnyOf(component_name="Image", serializers=[public, staff], many=many)


def image_page(public: Shape, staff: Shape) -> serializers.Serializer:
    return page_of("ImagePage", image_as_seen(public, staff, many=True))


def _with_duplicate(shape: type[serializers.ModelSerializer], name: str) -> Shape:
    @extend_schema_serializer(component_name=name)
    class UploadResult(shape):
        duplicate = serializers.BooleanField(
            help_text="True when the same bytes were already in the catalog."
        )

        class Meta(shape.Meta):
            fields = [*shape.Meta.fields, "duplicate"]

    return UploadResult


def upload_results(
    public: type[serializers.ModelSerializer], staff: type[serializers.ModelSerializer]
) -> dict[int, OpenApiResponse]:
    """The image as the uploader may see it (what the list shows them), with `duplicate`."""
    result = AnyOf(
        component_name="ImageUploadResult",
        serializers=[
            _with_duplicate(public, "PublicImageUploadResult"),
            _with_duplicate(staff, "CatalogImageUploadResult"),
        ],
    )
    return {
        201: OpenApiResponse(result, description="Added; indexing is queued."),
        200: OpenApiResponse(
            result,
            description="The same bytes were already in the catalog: that image, with "
            '`"duplicate": true`; nothing is added. Without the view permission, only its '
            "public fields, whatever its status.",
        ),
    }


def _image_edit(name: str, *, form: bool) -> serializers.Serializer:
    return inline_serializer(
        name=name,
        fields={
            "title": title_input(form=form),
            "tags": tags_input(form=form),
            "link_url": link_url_input(form=form),
            "metadata": metadata_input(form=form),
            "is_active": is_active_input(form=form, upsert=False),
        },
    )


IMAGE_PATCH_REQUEST = {
    "application/json": OpenApiRequest(
        _image_edit("ImagePatch", form=False),
        examples=[
            OpenApiExample(
                "Link and metadata",
                value={"link_url": "https://shop.example/items/42", "metadata": {"price": 12}},
            ),
            OpenApiExample("Deactivate", value={"is_active": False}),
        ],
    ),
    "multipart/form-data": _image_edit("ImagePatchForm", form=True),
    "application/x-www-form-urlencoded": _image_edit("ImagePatchUrlencoded", form=True),
}
