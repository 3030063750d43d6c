"""The bodies of the catalog API's writes (PATCH an image, PUT an item): a JSON object or a
form, read into what the serializers and the services check."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.http import QueryDict

from search.tags import InvalidTags
from visualsearch.errors import ApiError


def request_body(request) -> Mapping:
    if not isinstance(request.data, Mapping):
        raise ApiError(
            "malformed_request",
            'Send a JSON object, e.g. {"title": "Blue mug", "link_url": "https://..."}.',
        )
    return request.data


def serializer_fields(request, data: Mapping) -> dict[str, Any]:
    """What a serializer checks: the body without its files, one value per form field."""
    return {key: data.get(key) for key in data if key not in request.FILES}


def item_values(request, data: Mapping) -> dict[str, Any]:
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
