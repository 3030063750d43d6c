"""Decode and validate image bytes: the one decoder for catalog uploads and queries.

Every refusal is an `ImageRejected` with a stable code and a sentence that says what to
do, so the API, the admin and the import command report the same thing.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import hashlib
import io
import re
import struct
import threading
import warnings
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

# Formats a browser can produce or a camera commonly writes; HEIF and AVIF only where
# pillow-heif or Pillow's own plugin can read them. Only these parsers ever see the bytes:
# others (PSD, EPS, PPM, ...) are named from their magic bytes and refused unparsed.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
# A phone JPEG that carries a second picture (depth map, preview) opens as MPO.
_SAME_FORMAT = {"MPO": "JPEG"}
_EXTENSIONS = {"JPEG": "jpg", "TIFF": "tif", "HEIF": "heic"}
# A longer side more than this many times the shorter one is refused: the model scales the
# shorter side up to its input size, so a 1 x 100000 sliver would become 256 x 25.6 M.
MAX_ASPECT_RATIO = 20
# What Pillow's parsers raise on malformed input, besides its own errors.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    struct.error,
    ArithmeticError,
    RuntimeError,  # pillow-heif's libheif errors; RecursionError
)
_WHITESPACE = b" \t\r\n\f\v"
_URL_SAFE = bytes.maketrans(b"-_", b"+/")
_DATA_URL = re.compile(rb"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)
_ORIENTATION = 0x0112
_TRANSPOSE_FOR = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_registration_lock = threading.Lock()


class ImageRejected(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied; maybe reduced, see decode_image
    format: str
    width: int  # of the upright original, whatever size `image` was decoded at
    height: int
    sha256: str

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self.format, self.format.lower())


def decode_base64(text: str, *, max_bytes: int) -> bytes:
    """Bytes from plain base64 or a `data:` URL; refuses before decoding something huge."""
    if not isinstance(text, str):
        raise ImageRejected("invalid_base64", "Send the image as a base64 string.")
    # From the length alone, before any copy: room for a data: prefix and line breaks.
    encoded_max = 4 * -(-max_bytes // 3)
    if len(text) > encoded_max + encoded_max // 16 + 1024:
        raise too_large_error(max_bytes)
    try:
        body = bytearray(text, "ascii")
    except UnicodeEncodeError:
        raise _invalid_base64() from None
    body = body.translate(None, _WHITESPACE)  # line-wrapped base64 is still base64
    prefix = _DATA_URL.match(body)
    if prefix:
        del body[: prefix.end()]
    if not body:
        raise ImageRejected("empty_image", "The image is empty; send the bytes of a picture.")
    if len(body) * 3 // 4 > max_bytes + 3:
        raise too_large_error(max_bytes)
    body += b"=" * (-len(body) % 4)
    try:
        return binascii.a2b_base64(body, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    try:  # the URL-safe alphabet that some clients produce
        return binascii.a2b_base64(body.translate(_URL_SAFE), strict_mode=True)
    except (binascii.Error, ValueError):
        raise _invalid_base64() from None


def _invalid_base64() -> ImageRejected:
    return ImageRejected(
        "invalid_base64",
        "The image is not valid base64; send the file's bytes base64-encoded or as a data: URL.",
    )


def read_limited(file: IO[bytes], *, max_bytes: int) -> bytes:
    """The bytes of an uploaded or opened file, refusing one over `max_bytes`.

    Reads at most one byte more than the limit, whatever the file claims its size is, so
    a huge upload or a 5 GB file named .jpg is never held whole. Every door reads with it.
    """
    size = getattr(file, "size", None)
    if isinstance(size, int) and size > max_bytes:
        raise too_large_error(max_bytes)
    with contextlib.suppress(AttributeError, OSError):  # a pipe is read from where it is
        file.seek(0)
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large_error(max_bytes)
    return data


def too_large_error(max_bytes: int) -> ImageRejected:
    return ImageRejected(
        "image_too_large",
        f"The image is larger than {max_bytes / 1_048_576:.1f} MB; send a smaller or "
        "more compressed file.",
    )


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, shrink_to: int | None = None
) -> DecodedImage:
    """Validate `data` and return it decoded as an upright RGB image.

    With `shrink_to` (the model's resize size), the pixels are decoded at a reduced size
    whose shorter side still covers it: a JPEG at a smaller DCT scale, other formats by an
    integer box reduction. Catalog indexing and queries must pass the same value, so the
    same bytes always give the same pixels. Sizes are checked from the header, before any
    pixel is decoded.
    """
    if not data:
        raise ImageRejected("empty_image", "The image is empty; send the bytes of a picture.")
    if len(data) > max_bytes:
        raise too_large_error(max_bytes)
    image = open_image(data, max_pixels=max_pixels)
    image_format = _SAME_FORMAT.get(image.format, image.format)
    width, height = image.size
    if width * height > max_pixels:
        raise too_many_pixels_error(max_pixels)
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageRejected(
            "bad_dimensions",
            f"The image is {width}x{height} pixels; one side is more than "
            f"{MAX_ASPECT_RATIO} times the other. Crop it to the part to search for.",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            orientation = orientation_of(image)
            if shrink_to and image_format == "JPEG":
                # Asking for a square makes the scale follow the shorter side.
                image.draft(None, (shrink_to, shrink_to))
            rgb = flatten(to_8bit(image))
            factor = min(rgb.size) // shrink_to if shrink_to else 1
            if factor >= 2:
                rgb = rgb.reduce(factor)
            rgb = upright(rgb, orientation)
    except Image.DecompressionBombError:
        raise too_many_pixels_error(max_pixels) from None
    except DECODE_ERRORS as exc:
        raise _corrupt(exc) from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return DecodedImage(
        image=rgb,
        format=image_format,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def open_image(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """The image's header parsed by a supported format's parser only; pixels not decoded."""
    formats = _open_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings, "possible formats" notes
            return Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        other = _format_by_magic(data)
        if other:
            raise ImageRejected(
                "unsupported_format",
                f"{other} images are not supported; convert it to JPEG, PNG or WebP.",
            ) from None
        raise ImageRejected(
            "not_an_image",
            "The data is not an image; send a JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC file.",
        ) from None
    except Image.DecompressionBombError:
        raise too_many_pixels_error(max_pixels or Image.MAX_IMAGE_PIXELS) from None
    except DECODE_ERRORS as exc:
        raise _corrupt(exc) from None


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """The parsers `open_image` may use; registers pillow-heif's on first use."""
    with _registration_lock:
        try:
            import pillow_heif
        except ImportError:  # HEIC is then refused as unsupported, the rest works
            pass
        else:
            pillow_heif.register_heif_opener()
        Image.init()
        return tuple(name for name in SUPPORTED_FORMATS if name in Image.OPEN)


def _format_by_magic(data: bytes) -> str | None:
    """Which other format claims these first bytes; only cheap prefix checks run."""
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        if name in SUPPORTED_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:  # a prefix check tripping on a short prefix claims nothing
            continue
    return None


def orientation_of(image: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 when absent, unreadable or out of range."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE_FOR else 1


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """`image` turned as a viewer shows it, given its stored EXIF orientation."""
    method = _TRANSPOSE_FOR.get(orientation)
    return image.transpose(method) if method is not None else image


def to_8bit(image: Image.Image) -> Image.Image:
    """Loads `image` and returns it as 8-bit RGB, RGBA or L (alpha kept).

    16-bit and float images are scaled to 8 bits, never clamped: Pillow's own convert()
    clips 16-bit levels at 255, which turns a 16-bit photo almost white.
    """
    image.load()
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    if image.mode in _SIXTEEN_BIT:
        levels = np.asarray(image)
        gray = Image.fromarray(_scale_to_8bit(levels, image.mode))
        transparent = image.info.get("transparency")
        if isinstance(transparent, int):
            alpha = Image.fromarray(np.where(levels == transparent, 0, 255).astype(np.uint8))
            return Image.merge("LA", (gray, alpha)).convert("RGBA")
        return gray
    if image.mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def _scale_to_8bit(levels: np.ndarray, mode: str) -> np.ndarray:
    if mode.startswith("I;16"):
        return (levels >> 8).astype(np.uint8)
    # "I" and "F" carry no bit depth: infer the range the values were written in.
    levels = np.nan_to_num(levels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(levels.min()), float(levels.max())) if levels.size else (0.0, 0.0)
    if low >= 0 and high <= 1 and mode == "F":
        scaled = levels * 255
    elif low >= 0 and high <= 255:
        scaled = levels
    elif low >= 0 and high <= 65535:
        scaled = levels / 257
    else:
        scaled = (levels - low) * (255 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def flatten(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white, as a viewer would show it."""
    if image.mode == "RGB":
        return image
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


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
