"""make_thumbnail on the shapes real cameras and editors write."""

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from PIL import Image

from catalog.hosting import make_thumbnail
from catalog.pipeline.indexing import images_index
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


def test_a_preview_from_the_models_decoder_makes_the_same_thumbnail_without_decoding_again(
    monkeypatch,
):
    from catalog.hosting import base
    from search.decoding import decode_upload

    data = encode(photo("chelsea.png").resize((1500, 1000)), "JPEG", quality=90)
    preview = decode_upload(data).image  # what indexing decoded for the model
    assert max(preview.size) < 1500  # decoded at a reduced scale
    from_data = np.asarray(thumbnail_of(data, 320), dtype=np.float32)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("the original was decoded again")

    monkeypatch.setattr(base, "open_image", must_not_decode)
    from_preview = Image.open(io.BytesIO(make_thumbnail(data, 320, preview=preview)))
    assert from_preview.size == (320, 213)
    assert np.abs(np.asarray(from_preview, dtype=np.float32) - from_data).mean() < 4


def test_a_preview_smaller_than_the_thumbnail_is_not_used():
    data = encode(photo("chelsea.png").resize((900, 600)), "JPEG")
    small = photo("chelsea.png").convert("RGB").resize((300, 200))
    thumbnail = Image.open(io.BytesIO(make_thumbnail(data, 320, preview=small)))
    assert thumbnail.size == (320, 213)


@pytest.mark.django_db
def test_indexing_decodes_a_jpeg_once_and_a_png_again_for_its_transparency(monkeypatch, settings):
    from catalog import services
    from catalog.hosting import base

    opened = []
    real_open = base.open_image
    monkeypatch.setattr(base, "open_image", lambda data: opened.append(data) or real_open(data))
    jpeg = encode(photo("coffee.png").convert("RGB").resize((1200, 800)), "JPEG")
    png = encode(photo("coffee.png").convert("RGBA").resize((1200, 800)), "PNG")
    images = [
        services.image_create(file=ContentFile(data, name=name))[0]
        for data, name in ((jpeg, "a.jpg"), (png, "b.png"))
    ]
    images_index(image_ids=[image.pk for image in images])
    assert opened == [png]  # the thumbnail maker opened only the PNG
    for image in images:
        image.refresh_from_db()
        thumbnail_key = image.hosted_key.rsplit(".", 1)[0] + ".thumb.webp"
        with Image.open(settings.MEDIA_ROOT / thumbnail_key) as thumbnail:
            assert thumbnail.size == (320, 213)
