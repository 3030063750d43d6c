"""Pieces the catalog API's shapes share: how a view's serializer is passed in, and the
editable fields of an image (an outside item's fields), as PATCH and the upsert take them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# A view's serializer, passed in rather than imported, so that catalog.apis can use these
# helpers in its decorators without an import cycle.
Shape = type[serializers.Serializer]


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


def link_url_input(*, form: bool) -> serializers.CharField:
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


def title_input(*, form: bool) -> serializers.CharField:
    return serializers.CharField(
        required=False, allow_blank=True, allow_null=not form, max_length=200
    )


def is_active_input(*, form: bool, upsert: bool) -> serializers.BooleanField:
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
