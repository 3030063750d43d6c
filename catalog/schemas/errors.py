"""The refusals each catalog endpoint documents: {status: {code: when}}, merged with the
ones every door shares (visualsearch.schemas)."""

from __future__ import annotations

from visualsearch.schemas import (
    BAD_TOKEN,
    IMAGE_REFUSALS,
    PARSED_BODY,
    STAFF_ONLY,
    ErrorCodes,
    error_responses,
    merge_codes,
)

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


UPSERT_ERRORS = error_responses(
    merge_codes(
        PARSED_BODY,
        ITEM_FIELD_REFUSALS,
        {
            400: {
                "invalid_external_id": "the path's external id is empty once trimmed, over "
                "255 characters, or holds a control character",
                "missing_image": "no main picture: none of `image` (file or base64) and "
                "`image_url` (`additional_images` alone are not enough)",
                "ambiguous_picture": "more than one of `image` and `image_url`",
                "invalid_additional_images": "`additional_images` is not a list of strings "
                "(in JSON), or a form sends it as text rather than file parts",
                "too_many_pictures": "`additional_images` lists more pictures than one "
                "request takes (the body schema's `maxItems`); nothing was fetched or changed",
                "invalid_base64": "`image`, or an `additional_images` string without `:` or "
                "starting with `data:`, is not base64 or a base64 `data:` URL",
                "url_not_allowed": "`image_url` or an `additional_images` URL is not an "
                "http(s) URL, carries a user or "
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
