"""make_thumbnail on the shapes real cameras and editors write."""

import io

import numpy as np
import pytest
from PIL import Image

from catalog.hosting import make_thumbnail
from search.imaging import ImageRejected
from tests.conftest import encode, photo
from tests.search.test_imaging import gray16, heic, mean_gray, mpo, tiff


def thumbnail_of(data: bytes, size: int = 64) -> Image.Image:
    image = Image.open(io.BytesIO(make_thumbnail(data, size)))
    assert image.format == "WEBP"
    assert max(image.size) == size
    return image


SHAPES = {
    "16-bit png": lambda original: encode(Image.fromarray(gray16(original)), "PNG"),
    "16-bit big-endian tiff": lambda original: tiff(gray16(original), byteorder=">"),
    "float tiff": lambda original: tiff(gray16(original).astype(np.float32) / 65535),
    "heic": lambda original: heic(original, quality=90),
    "mpo": mpo,
    "cmyk jpeg": lambda original: encode(original.convert("CMYK"), "JPEG", quality=95),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_thumbnail_keeps_the_tones_of_the_original(shape):
    original = photo("camera.png").convert("RGB")
    thumbnail = thumbnail_of(SHAPES[shape](original))
    assert abs(mean_gray(thumbnail) - mean_gray(original)) < 3


def test_a_thumbnail_is_upright():
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = photo("chelsea.png").transpose(Image.Transpose.ROTATE_90)
    thumbnail = thumbnail_of(encode(stored, exif=exif.tobytes()))
    assert thumbnail.width > thumbnail.height


def test_a_thumbnail_keeps_transparency():
    image = Image.new("P", (80, 40), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    thumbnail = thumbnail_of(encode(image, "PNG", transparency=1))
    assert thumbnail.mode == "RGBA"
    assert thumbnail.getpixel((0, 0))[3] == 0


def test_a_thumbnail_is_never_made_from_an_unsupported_format():
    with pytest.raises(ImageRejected):
        make_thumbnail(encode(photo().resize((64, 64)), "PCX"), 32)
