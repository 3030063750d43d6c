"""One decoder for every picture that is embedded: catalog uploads, the images indexing
reads back, and search queries. Both sides decode at the size the model needs, so the
same bytes give the same vector whether they are indexed or searched with."""

from __future__ import annotations

from django.conf import settings

from search.embedding import EmbeddingOptions
from search.imaging import DecodedImage, decode_image


def decode_upload(
    data: bytes, *, options: EmbeddingOptions | None = None, max_pixels: int | None = None
) -> DecodedImage:
    """`data` validated and decoded at the size `options`' model needs (the settings' model
    when None). `max_pixels` lowers the settings' IMAGE_MAX_PIXELS (queries pass
    SEARCH_MAX_PIXELS); it never raises it."""
    options = options or EmbeddingOptions.from_settings()
    limit = (
        settings.IMAGE_MAX_PIXELS
        if max_pixels is None
        else min(max_pixels, settings.IMAGE_MAX_PIXELS)
    )
    return decode_image(
        data,
        max_bytes=settings.IMAGE_MAX_BYTES,
        max_pixels=limit,
        shrink_to=options.resize_size,
    )
