"""Where published catalog images live: the interface every image host implements."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass

from PIL import Image

from search.imaging import loaded, open_image, orientation_of, to_8bit, upright


class ImageHostError(Exception):
    """The host could not do what was asked; the indexing task retries later."""


@dataclass(frozen=True)
class HostedImage:
    key: str  # what the host needs to find it again (a storage path, a public id)
    url: str  # the original
    thumbnail_url: str


class ImageHost(ABC):
    name: str

    @abstractmethod
    def publish(
        self,
        *,
        image_id: int,
        sha256: str,
        data: bytes,
        extension: str,
        preview: Image.Image | None = None,
    ) -> HostedImage:
        """Store the original and make a thumbnail; publishing again overwrites, never
        duplicates. `preview` is the picture already decoded, upright, at reduced size
        (indexing decodes it for the model): a host that makes its own thumbnail may make
        it from that instead of decoding `data` again."""

    @abstractmethod
    def owns(self, key: str) -> bool:
        """Whether `key` has the shape of a key this host makes for a catalog image.

        Removal keys reach the worker through the broker, which is only as safe as its
        password: a key of any other shape is never deleted.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the original and its thumbnail; an unknown key is not an error."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The original's bytes, e.g. to embed it again with new weights."""


def make_thumbnail(data: bytes, size: int, *, preview: Image.Image | None = None) -> bytes:
    """A WebP of at most `size` pixels on the longest side, upright, as viewers show it.

    Read by the same parsers and 8-bit conversion as the decoder (search.imaging), so a
    16-bit PNG, a HEIC or a CMYK JPEG looks here as it does to the model. An RGB
    `preview` (the upright picture the model's decoder made, see ImageHost.publish) at
    least `size` pixels long is used instead of decoding `data` again: decoding a 2 MP
    JPEG a second time was the largest cost of indexing after the model.
    """
    if preview is not None and preview.mode == "RGB" and max(preview.size) >= size:
        image = preview.copy()
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return _webp(image)
    with open_image(data) as image:
        orientation = orientation_of(image)
        if image.format in ("JPEG", "MPO"):
            # Decode at the smallest JPEG scale that keeps the longest side at twice the
            # thumbnail's (Image.thumbnail's own margin against aliasing). Asking for
            # (2 * size, 2 * size) would also hold the shorter side to it, and decode a
            # 3:2 photo at full size.
            scale = min(1.0, 2 * size / max(image.size))
            image.draft(None, (round(image.width * scale), round(image.height * scale)))
        image = loaded(image, data)
        # Box-reduced while it is converted, by the factor Image.thumbnail would reduce by
        # (down to twice the thumbnail's size): converting the full-size picture first made
        # full-size copies, 1.5 GB for a 40 M pixel float TIFF.
        image = to_8bit(image, reduce_by=int(max(image.size) / (2 * size)))
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        image = upright(image, orientation)
        return _webp(image)


def _webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # method 2 rather than the default 4: half the encoding time (3 against 7 ms for a
    # 320-pixel thumbnail) for files about 3% larger.
    image.save(buffer, "WEBP", quality=82, method=2)
    return buffer.getvalue()
