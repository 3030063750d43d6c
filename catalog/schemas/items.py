"""The OpenAPI description of the catalog API: what anyone and what staff see, and refusals.

The view's serializers are passed in rather than imported, so catalog.apis can use these
helpers in its decorators without an import cycle.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    extend_schema_field,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers

from search.fetching import MAX_URL_LENGTH
from visualsearch.schemas import (
    BAD_TOKEN,
    IMAGE_REFUSALS,
    PARSED_BODY,
    STAFF_ONLY,
    AnyOf,
    ErrorCodes,
    PictureFileField,
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


# --- An outside catalog's fields, and editing an image ------------------------------------

_METADATA_VALUE = {
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "array", "items": {"type": "string"}},
    ]
}
_METADATA_HELP = (
    "A flat JSON object: strings, numbers, true/false and lists of strings (no nulls, no "
    "nested objects), at most `CATALOG_METADATA_MAX_BYTES` (4096) bytes as JSON."
)


@extend_schema_field({"type": "object", "additionalProperties": _METADATA_VALUE})
class MetadataField(serializers.DictField):
    """An image's metadata, with the schema saying what its values may be."""


def metadata_input(*, form: bool) -> serializers.Field:
    if form:
        return serializers.CharField(
            required=False,
            allow_blank=True,
            help_text=f'JSON text of an object, e.g. {{"price": 12}}; empty clears it. '
            f"{_METADATA_HELP}",
        )
    return _NullableMetadataField(
        required=False, help_text=f"{_METADATA_HELP} null or {{}} clears it."
    )


@extend_schema_field({"type": "object", "additionalProperties": _METADATA_VALUE, "nullable": True})
class _NullableMetadataField(serializers.DictField):
    pass


@extend_schema_field(
    {
        "anyOf": [
            {"type": "array", "items": {"type": "string", "maxLength": 100}},
            {"type": "string"},
        ],
        "nullable": True,
    }
)
class _TagsField(serializers.Field):
    pass


def tags_input(*, form: bool) -> serializers.Field:
    help_text = (
        "Up to 100 characters each; stored trimmed, lower-cased, unique and sorted. "
        "Empty clears them."
    )
    if form:
        return serializers.CharField(
            required=False, allow_blank=True, help_text=f"Comma-separated: a, b. {help_text}"
        )
    return _TagsField(
        required=False,
        help_text=f'A list, ["a", "b"], or comma-separated text, "a, b". null clears them too. '
        f"{help_text}",
    )


def _link_url_input(*, form: bool) -> serializers.CharField:
    return serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=not form,
        max_length=2000,
        help_text="Where the item lives: an absolute http:// or https:// URL (nothing else, "
        "so no page renders a `javascript:` link); empty"
        + ("" if form else " or null")
        + " clears it.",
    )


def _title_input(*, form: bool) -> serializers.CharField:
    return serializers.CharField(
        required=False, allow_blank=True, allow_null=not form, max_length=200
    )


def _is_active_input(*, form: bool, upsert: bool) -> serializers.BooleanField:
    if upsert:
        help_text = (
            "Every picture of the item, as a person decides it. Left out (or null): new "
            "pictures are active and the others keep their flag, a picture the source had "
            "dropped and lists again included."
        )
    else:
        help_text = (
            "Deactivating takes the image out of search at once; its vector and hosted "
            "files follow in the background. A person's choice stays: a source that lists "
            "the picture again does not undo it."
        )
    return serializers.BooleanField(required=False, allow_null=not form, help_text=help_text)


def _image_edit(name: str, *, form: bool) -> serializers.Serializer:
    return inline_serializer(
        name=name,
        fields={
            "title": _title_input(form=form),
            "tags": tags_input(form=form),
            "link_url": _link_url_input(form=form),
            "metadata": metadata_input(form=form),
            "is_active": _is_active_input(form=form, upsert=False),
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

# The refusals of the item's fields, at every door that takes them.
ITEM_FIELD_REFUSALS: ErrorCodes = {
    400: {
        "invalid_request": "`title` is over 200 characters or `is_active` is not a boolean; "
        "`fields` says which",
        "invalid_tags": "`tags` is not a list of strings or comma-separated text, or a tag is "
        "over 100 characters",
        "invalid_link_url": "`link_url` is not an absolute http(s) URL of at most 2000 "
        "characters (`javascript:` and `data:` links included)",
        "invalid_metadata": "`metadata` is not a flat object of strings, numbers, booleans and "
        "lists of strings, has an empty key, or is over `CATALOG_METADATA_MAX_BYTES` as "
        "JSON (in a form: not JSON text of such an object)",
    },
}

PATCH_ERRORS = error_responses(
    merge_codes(
        PARSED_BODY,
        ITEM_FIELD_REFUSALS,
        {
            400: {"malformed_request": "the body does not parse, or is not a JSON object"},
            404: {"image_not_found": "no image has that id"},
        },
        STAFF_ONLY,
    )
)


# --- PUT /api/images/by-external-id/{external_id}/ ----------------------------------------

EXTERNAL_ID_PARAMETER = OpenApiParameter(
    "external_id",
    {"type": "string", "minLength": 1},
    OpenApiParameter.PATH,
    description="The outside catalog's id of the item: up to 255 printable characters, "
    "slashes included (`shop/42` is sent as `/api/images/by-external-id/shop/42/`); "
    "percent-encode what a URL path cannot hold (`?`, `#`, `%`). Surrounding spaces are "
    "dropped.",
)


def _item(name: str, *, form: bool) -> serializers.Serializer:
    if form:
        pictures = {
            "image": PictureFileField(
                required=False, help_text="The picture's bytes. Send this or `image_url`."
            ),
        }
    else:
        pictures = {
            "image": serializers.CharField(
                required=False,
                allow_null=True,
                min_length=1,
                help_text="The picture as base64, or a base64 `data:` URL. Send one of "
                "`image` and `image_url`.",
            ),
        }
    image_url = serializers.CharField(
        required=False,
        allow_null=not form,
        min_length=1,
        max_length=MAX_URL_LENGTH,
        help_text="An http:// or https:// address of the picture, fetched by the server with "
        "search's URL checks (public addresses, `URL_FETCH_PORTS`, at most 3 redirects, "
        "`URL_FETCH_DEADLINE_SECONDS`). Asked again conditionally (If-None-Match, "
        "If-Modified-Since): a picture its server says is unchanged is not downloaded.",
    )
    return inline_serializer(
        name=name,
        fields={
            **pictures,
            "image_url": image_url,
            "title": _title_input(form=form),
            "tags": tags_input(form=form),
            "link_url": _link_url_input(form=form),
            "metadata": metadata_input(form=form),
            "is_active": _is_active_input(form=form, upsert=True),
        },
    )


ITEM_UPSERT_REQUEST = {
    "application/json": OpenApiRequest(
        _item("ItemUpsert", form=False),
        examples=[
            OpenApiExample(
                "By URL",
                value={
                    "image_url": "https://shop.example/pictures/42.jpg",
                    "title": "Blue mug",
                    "tags": ["kitchen", "mugs"],
                    "link_url": "https://shop.example/items/42",
                    "metadata": {"price": 12, "in_stock": True},
                },
            ),
            OpenApiExample(
                "By picture", value={"image": "data:image/jpeg;base64,/9j/4AAQ…", "title": "Mug"}
            ),
        ],
    ),
    "multipart/form-data": _item("ItemUpsertForm", form=True),
}

CHANGES = ["pictures", "title", "tags", "link_url", "metadata", "is_active"]


def item_upsert_results(staff: Shape) -> dict[int, OpenApiResponse]:
    result = inline_serializer(
        name="ItemUpsertResult",
        fields={
            "outcome": serializers.ChoiceField(
                choices=["created", "updated", "unchanged"],
                help_text="`created`: the catalog held no image of this item (201). "
                "`updated`: something changed (200). `unchanged`: the catalog already "
                "held the item as sent; nothing was written, stored or embedded (200).",
            ),
            "changed": serializers.ListField(
                child=serializers.ChoiceField(choices=CHANGES),
                help_text="What changed when `updated`: `pictures` (a new picture was stored "
                "and queued for embedding, or the one no longer sent was deactivated), or a "
                "field. Empty when `created` or `unchanged`.",
            ),
            "external_id": serializers.CharField(help_text="The item's id, as stored."),
            "images": staff(
                many=True,
                help_text="The item's picture as the catalog now holds it. A picture it no "
                "longer lists stays in the catalog, deactivated (`is_active` false), and is "
                "not listed here.",
            ),
        },
    )
    return {
        201: OpenApiResponse(result, description="Created; indexing is queued."),
        200: OpenApiResponse(
            result,
            description="The item existed: `updated` or `unchanged`. Only a picture whose "
            "bytes (sha256) changed is stored, published and embedded again; a change of "
            "title, tags, link, metadata or `is_active` re-indexes from the cached embedding.",
        ),
    }


UPSERT_ERRORS = error_responses(
    merge_codes(
        PARSED_BODY,
        ITEM_FIELD_REFUSALS,
        {
            400: {
                "invalid_external_id": "the path's external id is empty once trimmed, over "
                "255 characters, or holds a control character",
                "missing_image": "none of `image` (file or base64) and `image_url`",
                "ambiguous_picture": "more than one of `image` and `image_url`",
                "invalid_base64": "`image` is not base64 or a base64 `data:` URL",
                "url_not_allowed": "`image_url` is not an http(s) URL, carries a user or "
                "password, names a port other than `URL_FETCH_PORTS`, or its host (or a "
                "redirect's) resolves to a non-public address",
                "url_fetch_failed": "the picture's host did not resolve or answer, the fetch "
                "passed `URL_FETCH_DEADLINE_SECONDS`, it answered other than 2xx or 304, or "
                "redirected more than 3 times",
                "malformed_request": "the body does not parse, or is not a JSON object",
            },
            409: {
                "item_changed": "a picture of the item was deleted while this request ran; "
                "send it again",
            },
            503: {
                "staging_unavailable": "a new picture could not be stored for the worker "
                "(object storage down); nothing of the item changed, send it again",
            },
        },
        IMAGE_REFUSALS,
        {
            403: {
                **STAFF_ONLY[403],
                "permission_denied": "a staff user without both the add and the change "
                "permission: an upsert may do either",
            }
        },
    )
)
