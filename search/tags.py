"""Tags: one normal form for a catalog image's tags and for the search's tag filter.

A tag is trimmed and lower-cased wherever it enters (admin, catalog API, import command,
search API, search page), so that a tag a curator typed is the tag a searcher can choose.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_TAG_LENGTH = 100
MAX_FILTER_TAGS = 50  # a search may ask for up to this many tags at once


class InvalidTags(ValueError):
    """Tags that cannot be stored or searched for; `detail` says what to send instead."""

    code = "invalid_tags"

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


def normalize_tags(tags: str | Iterable[str] | None) -> list[str]:
    """Lower-case, trimmed, unique, sorted; accepts "a, b" or ["a", "b"].

    Raises InvalidTags for a tag longer than MAX_TAG_LENGTH (no search could ask for it), and
    for anything but text or a list of texts (a number, an object: from JSON or a feed).
    """
    if not tags:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, list | tuple | set | frozenset) or not all(
        isinstance(tag, str) and is_storable_text(tag) for tag in tags
    ):
        raise InvalidTags('Send tags as a list of texts, ["beach", "summer"], or "beach, summer".')
    normal = sorted({tag.strip().lower() for tag in tags if tag and tag.strip()})
    if too_long := [tag for tag in normal if len(tag) > MAX_TAG_LENGTH]:
        raise InvalidTags(
            f"Each tag may be at most {MAX_TAG_LENGTH} characters; "
            f'"{too_long[0][:40]}…" is {len(too_long[0])}. Shorten it.'
        )
    return normal


def is_storable_text(value: str) -> bool:
    """Storable as UTF-8: JSON can carry a lone surrogate ("\ud800"), which no database
    column takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def tag_filter(raw: object) -> list[str]:
    """The tags a search asks for, from a JSON list of strings or a comma-separated form
    field, normalised as catalog tags are. Raises InvalidTags when it is not such a list
    or asks for more than MAX_FILTER_TAGS tags."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(t, str) for t in raw)):
        try:
            tags = normalize_tags(raw)
        except InvalidTags:
            tags = None
        if tags is not None and len(tags) <= MAX_FILTER_TAGS:
            return tags
    raise InvalidTags(
        f'tags must be a list of up to {MAX_FILTER_TAGS} tags, e.g. ["beach", "summer"] (or '
        f'"beach, summer" in a form), each at most {MAX_TAG_LENGTH} characters.'
    )
