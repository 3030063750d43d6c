"""The fields that tie a catalog image to an outside catalog: external id, link and metadata.

Every door (admin, the catalog API, the upsert by external id, catalog sync) cleans them
here, so each refuses the same values with the same codes and sentences.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from search.tags import is_storable_text as _is_unicode

EXTERNAL_ID_MAX_LENGTH = 255
LINK_URL_MAX_LENGTH = 2000
TITLE_MAX_LENGTH = 200
# Metadata numbers go to every vector store as they are; Pinecone keeps them as 64-bit
# floats, which hold whole numbers exactly up to 2**53.
LARGEST_WHOLE_NUMBER = 2**53
_link_validator = URLValidator(schemes=["http", "https"])


class InvalidItemField(Exception):
    """A value no catalog image may hold; `code` and `detail` say which and what to do."""

    def __init__(self, code: str, field: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.field = field
        self.detail = detail


def clean_external_id(value: object, *, required: bool = False) -> str:
    """The outside catalog's id of an item, as stored: stripped, at most 255 characters,
    printable (it is shown in admin and sent in URLs and CSV reports)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidItemField("invalid_external_id", "external_id", "Send `external_id` as text.")
    value = value.strip()
    if not value and required:
        raise InvalidItemField(
            "invalid_external_id", "external_id", "`external_id` is empty; every item needs one."
        )
    if len(value) > EXTERNAL_ID_MAX_LENGTH:
        raise InvalidItemField(
            "invalid_external_id",
            "external_id",
            f"`external_id` is longer than {EXTERNAL_ID_MAX_LENGTH} characters; shorten it.",
        )
    if not value.isprintable():
        raise InvalidItemField(
            "invalid_external_id",
            "external_id",
            "`external_id` holds a control character (a tab, a line break…); remove it.",
        )
    return value


def clean_link_url(value: object) -> str:
    """Where a result leads: empty, or an absolute http(s) URL. Nothing else is ever stored,
    so no page can render a `javascript:` or `data:` link from it."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidItemField("invalid_link_url", "link_url", "Send `link_url` as text.")
    value = value.strip()
    if not value:
        return ""
    if len(value) > LINK_URL_MAX_LENGTH:
        raise InvalidItemField(
            "invalid_link_url",
            "link_url",
            f"`link_url` is longer than {LINK_URL_MAX_LENGTH} characters.",
        )
    try:
        _link_validator(value)
    except ValidationError:
        raise InvalidItemField(
            "invalid_link_url",
            "link_url",
            "`link_url` must be an absolute http:// or https:// address, e.g. "
            "https://shop.example/items/42.",
        ) from None
    return value


def clean_metadata(value: object) -> dict[str, Any]:
    """A flat JSON object of strings, numbers, booleans and lists of strings (what every
    vector store keeps beside a vector), at most CATALOG_METADATA_MAX_BYTES as JSON."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidItemField(
            "invalid_metadata", "metadata", 'Send `metadata` as a JSON object, e.g. {"price": 12}.'
        )
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip() or not _is_unicode(key):
            raise InvalidItemField(
                "invalid_metadata", "metadata", "Every `metadata` key must be non-empty text."
            )
        if not _is_flat_value(item):
            raise InvalidItemField(
                "invalid_metadata",
                "metadata",
                f"`metadata.{key}` must be a string, a number (whole numbers up to 2^53), "
                "true/false or a list of strings (no nulls, no nested objects).",
            )
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except UnicodeEncodeError:
        raise InvalidItemField(
            "invalid_metadata", "metadata", "`metadata` holds text that is not valid Unicode."
        ) from None
    limit = settings.CATALOG_METADATA_MAX_BYTES
    if size > limit:
        raise InvalidItemField(
            "invalid_metadata",
            "metadata",
            f"`metadata` is {size} bytes as JSON; at most {limit} are kept. Keep what a "
            "result needs to show.",
        )
    return dict(value)


def clean_title(value: object) -> str:
    """A title as stored: text, stripped, at most 200 characters, storable as UTF-8. A
    number (a JSON feed's title 42) is its text."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _is_unicode(value):
        raise InvalidItemField("invalid_title", "title", "Send `title` as text.")
    return value.strip()[:TITLE_MAX_LENGTH]


def _is_flat_value(value: object) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, str):
        return _is_unicode(value)
    if isinstance(value, int):
        return abs(value) <= LARGEST_WHOLE_NUMBER
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, list) and all(
        isinstance(item, str) and _is_unicode(item) for item in value
    )
