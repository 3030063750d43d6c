"""The shapes of PUT /api/images/by-external-id/{external_id}/: the item as its source
says it is now (JSON or a form), and what the upsert did."""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
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
from search.fetching import MAX_URL_LENGTH
from visualsearch.schemas import PictureFileField

EXTERNAL_ID_PARAMETER = OpenApiParameter(
    "external_id",
    {"type": "string", "minLength": 1},
    OpenApiParameter.PATH,
    description="The outside catalog's id of the item: up to 255 printable characters, "
    "slashes included (`shop/42` is sent as `/api/images/by-external-id/shop/42/`); "
    "percent-encode what a URL path cannot hold (`?`, `#`, `%`). Surrounding spaces are "
    "dropped.",
)


def _item(name: str, *, form: bool, max_additional_images: int) -> serializers.Serializer:
    if form:
        pictures = {
            "image": PictureFileField(
                required=False,
                help_text="The main picture's bytes. Send this or `image_url`.",
            ),
        }
        additional = serializers.ListField(
            child=PictureFileField(),
            required=False,
            max_length=max_additional_images,
            help_text="The item's other pictures, one file part each (repeat the field), in "
            "order. To name them by URL, send JSON.",
        )
    else:
        pictures = {
            "image": serializers.CharField(
                required=False,
                allow_null=True,
                min_length=1,
                help_text="The main picture as base64, or a base64 `data:` URL. Send one of "
                "`image` and `image_url`.",
            ),
        }
        additional = serializers.ListField(
            child=serializers.CharField(min_length=1),
            required=False,
            allow_null=True,
            max_length=max_additional_images,
            help_text="The item's other pictures, in order, each an http(s) URL (fetched "
            "like `image_url`, conditionally) or the picture as base64 or a base64 `data:` "
            "URL (base64 holds no `:`, so a string with one is a URL unless it starts with "
            "`data:`). Left out, null or empty: the item has only its main picture.",
        )
    image_url = serializers.CharField(
        required=False,
        allow_null=not form,
        min_length=1,
        max_length=MAX_URL_LENGTH,
        help_text="An http:// or https:// address of the main picture, fetched by the server with "
        "search's URL checks (public addresses, `URL_FETCH_PORTS`, at most 3 redirects, "
        "`URL_FETCH_DEADLINE_SECONDS`). Asked again conditionally (If-None-Match, "
        "If-Modified-Since): a picture its server says is unchanged is not downloaded.",
    )
    return inline_serializer(
        name=name,
        fields={
            **pictures,
            "image_url": image_url,
            "additional_images": additional,
            "title": title_input(form=form),
            "tags": tags_input(form=form),
            "link_url": link_url_input(form=form),
            "metadata": metadata_input(form=form),
            "is_active": is_active_input(form=form, upsert=True),
        },
    )


def item_upsert_request(*, max_additional_images: int) -> dict[str, OpenApiRequest]:
    """The item as JSON or a form; the view passes in how many `additional_images` it takes."""
    limit = {"max_additional_images": max_additional_images}
    return {
        "application/json": OpenApiRequest(
            _item("ItemUpsert", form=False, **limit),
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
                    "By picture",
                    value={"image": "data:image/jpeg;base64,/9j/4AAQ…", "title": "Mug"},
                ),
                OpenApiExample(
                    "Several pictures",
                    value={
                        "image_url": "https://shop.example/pictures/42.jpg",
                        "additional_images": [
                            "https://shop.example/pictures/42-back.jpg",
                            "data:image/jpeg;base64,/9j/4AAQ…",
                        ],
                        "title": "Blue mug",
                    },
                ),
            ],
        ),
        "multipart/form-data": _item("ItemUpsertForm", form=True, **limit),
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
                "and queued for embedding, or one no longer sent was deactivated), or a "
                "field. Empty when `created` or `unchanged`.",
            ),
            "external_id": serializers.CharField(help_text="The item's id, as stored."),
            "images": staff(
                many=True,
                help_text="The item's pictures as the catalog now holds them, in the order "
                "sent, the main one first (a picture sent twice is listed once). A picture "
                "it no longer lists stays in the catalog, deactivated (`is_active` false), "
                "and is not listed here.",
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
