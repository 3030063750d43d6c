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

try:  # Pillow's own libwebp binding, used by `loaded`; Pillow's load() without it
    from PIL._webp import WebPAnimDecoder as _WebPDecoder
except ImportError:  # pragma: no cover - Pillow built without WebP
    _WebPDecoder = None

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
            image = loaded(image, data)
            factor = min(image.size) // shrink_to if shrink_to else 1
            # Reduced while converted, and only then turned: no full-size copy is made.
            rgb = upright(to_8bit(image, reduce_by=factor, on_white=True), orientation)
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


def loaded(image: Image.Image, data: bytes) -> Image.Image:
    """`image` (opened from `data` by open_image) with its first frame's pixels loaded.

    A WebP is decoded here rather than by Pillow's load(), which keeps libwebp's two
    full-size canvases alive while it copies the frame into the picture: four copies of
    the picture at once, 380 MB at 25 M pixels, against three here.
    """
    if image.format != "WEBP" or _WebPDecoder is None:
        image.load()
        return image
    decoder = _WebPDecoder(data)
    size, *_, rawmode = decoder.get_info()
    frame = decoder.get_next()
    del decoder  # its canvases, before the frame is wrapped
    if frame is None or rawmode not in ("RGBA", "RGBX"):
        raise OSError("the WebP's first frame could not be decoded")
    # Wraps the frame's bytes without copying them (the modes match); read-only.
    pixels = Image.frombuffer(rawmode, size, frame[0], "raw", rawmode, 0, 1)
    pixels.info = dict(image.info)
    image.close()
    return pixels


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


def to_8bit(image: Image.Image, *, reduce_by: int = 1, on_white: bool = False) -> Image.Image:
    """Loads `image` and returns it as 8-bit RGB, RGBA or L (alpha kept), box-reduced by
    `reduce_by`; with `on_white`, as RGB with transparency flattened onto white, as a
    viewer shows it.

    16-bit and float images are scaled to 8 bits, never clamped: Pillow's own convert()
    clips 16-bit levels at 255, which turns a 16-bit photo almost white.

    The picture is converted and reduced a strip at a time, so what this costs beyond the
    loaded picture is bounded: a 56 kB float TIFF at 25 M pixels took about 1 GB when its
    float64 copies were made at full size. Each strip is a whole number of reduction
    blocks tall, so the result is the same as converting the whole picture and reducing it.
    """
    image.load()
    target = _8bit_mode(image)
    if on_white:
        target = "RGB"
    factor = max(1, reduce_by)
    if image.mode == target and (factor == 1 or target in ("RGB", "L")):
        # Nothing to convert, and Pillow reduces these in place (RGBA it would premultiply
        # at full size first).
        return image.reduce(factor) if factor > 1 else image
    width, height = image.size
    rows = max(factor, _STRIP_PIXELS // max(width, 1) // factor * factor)
    level_range = _level_range(image, rows) if image.mode in ("I", "F") else (0.0, 0.0)
    result = Image.new(target, (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = _strip_to_8bit(image.crop((0, top, width, min(height, top + rows))), level_range)
        if on_white:
            strip = flatten(strip)
        if factor > 1:
            strip = strip.reduce(factor)
        result.paste(strip, (0, top // factor))
    return result


# Pixels converted at a time by to_8bit: a float64 copy of a strip is 8 MB.
_STRIP_PIXELS = 1 << 20


def _8bit_mode(image: Image.Image) -> str:
    """The mode to_8bit gives `image` without `on_white`."""
    if image.mode in _SIXTEEN_BIT:
        return "RGBA" if isinstance(image.info.get("transparency"), int) else "L"
    if image.mode in ("RGB", "RGBA", "L"):
        return image.mode
    if image.mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info:
        return "RGBA"
    return "RGB"


def _strip_to_8bit(strip: Image.Image, level_range: tuple[float, float]) -> Image.Image:
    target = _8bit_mode(strip)
    if strip.mode == target:
        return strip
    if strip.mode in _SIXTEEN_BIT:
        levels = np.asarray(strip)
        gray = Image.fromarray(_scale_to_8bit(levels, strip.mode, level_range))
        transparent = strip.info.get("transparency")
        if isinstance(transparent, int):
            alpha = Image.fromarray(np.where(levels == transparent, 0, 255).astype(np.uint8))
            return Image.merge("LA", (gray, alpha)).convert("RGBA")
        return gray
    if strip.mode == "La":  # premultiplied: Pillow converts it to RGBA only through LA
        strip = strip.convert("LA")
    return strip.convert(target)


def _level_range(image: Image.Image, rows: int) -> tuple[float, float]:
    """The lowest and highest level of an "I" or "F" image, NaN and infinities read as 0,
    measured a strip at a time."""
    low, high = np.inf, -np.inf
    width, height = image.size
    for top in range(0, height, rows):
        levels = _finite(np.asarray(image.crop((0, top, width, min(height, top + rows)))))
        if levels.size:
            low, high = min(low, float(levels.min())), max(high, float(levels.max()))
    return (low, high) if low <= high else (0.0, 0.0)


def _finite(levels: np.ndarray) -> np.ndarray:
    """`levels` as float64, NaN and infinities set to 0 (in place in the copy)."""
    return np.nan_to_num(levels.astype(np.float64), copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _scale_to_8bit(levels: np.ndarray, mode: str, level_range: tuple[float, float]) -> np.ndarray:
    if mode.startswith("I;16"):
        return (levels >> 8).astype(np.uint8)
    # "I" and "F" carry no bit depth: infer the range the values were written in, from the
    # whole picture's `level_range`, whichever strip `levels` is.
    low, high = level_range
    levels = _finite(levels)
    if low >= 0 and high <= 1 and mode == "F":
        levels *= 255
    elif low >= 0 and high <= 255:
        pass
    elif low >= 0 and high <= 65535:
        levels /= 257
    elif high > low:
        levels -= low
        levels *= 255 / (high - low)
    else:  # one level, outside every range: nothing to tell apart
        levels[...] = 0
    np.rint(levels, out=levels)
    np.clip(levels, 0, 255, out=levels)
    return levels.astype(np.uint8)


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
