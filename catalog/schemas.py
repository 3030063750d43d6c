"""The OpenAPI description of the catalog API: what anyone and what staff see, and refusals.

The view's serializers are passed in rather than imported, so catalog.apis can use these
helpers in its decorators without an import cycle.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers

from visualsearch.schemas import (
    BAD_TOKEN,
    IMAGE_REFUSALS,
    PARSED_BODY,
    STAFF_ONLY,
    AnyOf,
    error_responses,
    merge_codes,
    page_of,
)

Shape = type[serializers.Serializer]

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


LIST_ERRORS = error_responses(
    merge_codes(
        {
            400: {"invalid_request": "`status` is not one of the image statuses"},
            404: {"not_found": "`page` is past the last page"},
        },
        BAD_TOKEN,
    )
)

UPLOAD_ERRORS = error_responses(
    merge_codes(
        {
            400: {
                "missing_image": "no multipart file field `image`",
                "invalid_tags": "a tag is longer than 100 characters; nothing was saved",
                "invalid_request": "a field is refused, e.g. a `title` over 200 characters; "
                "`fields` says which",
            },
            503: {
                "staging_unavailable": "the upload could not be stored for the worker "
                "(object storage down); nothing was saved, send it again",
            },
        },
        IMAGE_REFUSALS,
        PARSED_BODY,
        STAFF_ONLY,
    )
)

DETAIL_ERRORS = error_responses(
    merge_codes(
        {404: {"image_not_found": "no such image, or one hidden from this client"}},
        BAD_TOKEN,
    )
)

DELETE_ERRORS = error_responses(
    merge_codes({404: {"image_not_found": "no image has that id"}}, STAFF_ONLY)
)


TAG_LIST = inline_serializer(
    name="TagList",
    fields={
        "tags": inline_serializer(
            name="TagCount",
            fields={"tag": serializers.CharField(), "count": serializers.IntegerField()},
            many=True,
        )
    },
)
