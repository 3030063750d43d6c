"""Decode and validate image bytes: the one decoder for catalog uploads and queries.

Every refusal is an `ImageRejected` with a stable code and a sentence that says what to
do, so the API, the admin and the import command report the same thing.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a browser can produce or a camera commonly writes. Others (PSD, EPS, ...) are
# refused by name rather than half-decoded.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)


class ImageRejected(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str
    width: int
    height: int
    sha256: str

    @property
    def extension(self) -> str:
        return {"JPEG": "jpg", "TIFF": "tif"}.get(self.format, self.format.lower())


def decode_base64(text: str, *, max_bytes: int) -> bytes:
    """Bytes from plain base64 or a `data:` URL; refuses before decoding something huge."""
    if not isinstance(text, str):
        raise ImageRejected("invalid_base64", "Send the image as a base64 string.")
    text = _DATA_URL.sub("", text.strip(), count=1)
    text = "".join(text.split())  # line-wrapped base64 is still base64
    if not text:
        raise ImageRejected("empty_image", "The image is empty; send the bytes of a picture.")
    if len(text) * 3 // 4 > max_bytes + 3:
        raise too_large_error(max_bytes)
    try:
        data = binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        # Also accept the URL-safe alphabet that some clients produce.
        try:
            data = binascii.a2b_base64(
                text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4),
                strict_mode=True,
            )
        except (binascii.Error, ValueError):
            raise ImageRejected(
                "invalid_base64",
                "The image is not valid base64; send the file's bytes base64-encoded "
                "or as a data: URL.",
            ) from None
    return data


def too_large_error(max_bytes: int) -> ImageRejected:
    return ImageRejected(
        "image_too_large",
        f"The image is larger than {max_bytes / 1_048_576:.1f} MB; send a smaller or "
        "more compressed file.",
    )


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Validate `data` and return it decoded as an upright RGB image."""
    if not data:
        raise ImageRejected("empty_image", "The image is empty; send the bytes of a picture.")
    if len(data) > max_bytes:
        raise too_large_error(max_bytes)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected(
            "not_an_image",
            "The data is not an image; send a JPEG, PNG, WebP, GIF, BMP or TIFF file.",
        ) from None
    except Image.DecompressionBombError:
        raise too_many_pixels_error(max_pixels) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _corrupt(exc) from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageRejected(
            "unsupported_format",
            f"{image.format} images are not supported; convert it to JPEG, PNG or WebP.",
        )
    image_format = image.format
    width, height = image.size
    if width * height > max_pixels:
        raise too_many_pixels_error(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
    except Image.DecompressionBombError:
        raise too_many_pixels_error(max_pixels) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _corrupt(exc) from None
    return DecodedImage(
        image=rgb,
        format=image_format,
        width=rgb.width,
        height=rgb.height,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _corrupt(exc: Exception) -> ImageRejected:
    return ImageRejected(
        "corrupt_image",
        f"The image could not be decoded ({exc}); it may be truncated. Send the whole file.",
    )


def too_many_pixels_error(max_pixels: int) -> ImageRejected:
    return ImageRejected(
        "too_many_pixels",
        f"The image has more than {max_pixels:,} pixels; resize it and try again.",
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white, as a viewer would show it."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
