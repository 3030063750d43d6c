import base64
import io

import pytest
from PIL import Image

from search.imaging import ImageRejected, decode_base64, decode_image
from tests.conftest import encode, photo, photo_bytes

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 2_000_000}


def rejection(data: bytes, **limits) -> str:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, **{**LIMITS, **limits})
    assert caught.value.detail  # every refusal says what to do
    return caught.value.code


def test_it_decodes_a_jpeg_to_rgb_with_its_size_and_hash():
    decoded = decode_image(photo_bytes("chelsea.png"), **LIMITS)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (451, 300)
    assert decoded.format == "JPEG"
    assert len(decoded.sha256) == 64


def test_it_rejects_empty_data():
    assert rejection(b"") == "empty_image"


def test_it_rejects_bytes_that_are_not_an_image():
    assert rejection(b"%PDF-1.4 this is a document") == "not_an_image"


def test_it_rejects_a_format_it_does_not_support():
    assert rejection(encode(photo().resize((64, 64)), "PCX")) == "unsupported_format"


def test_it_rejects_truncated_jpeg():
    data = photo_bytes()
    assert rejection(data[: len(data) // 2]) == "corrupt_image"


def test_it_rejects_too_many_bytes():
    assert rejection(photo_bytes(), max_bytes=1000) == "image_too_large"


def test_it_rejects_too_many_pixels():
    assert rejection(photo_bytes(), max_pixels=512 * 511) == "too_many_pixels"


def test_it_applies_exif_orientation():
    upright = photo("chelsea.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90 degrees clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    decoded = decode_image(encode(stored, exif=exif.tobytes()), **LIMITS)
    assert decoded.image.size == upright.size


def test_it_flattens_transparency_onto_white():
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    decoded = decode_image(encode(transparent, "PNG"), **LIMITS)
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)


def test_it_reads_plain_base64_and_data_urls():
    data = photo_bytes()
    plain = base64.b64encode(data).decode()
    assert decode_base64(plain, max_bytes=10**7) == data
    assert decode_base64(f"data:image/jpeg;base64,{plain}", max_bytes=10**7) == data
    assert decode_base64(plain[:60] + "\n" + plain[60:], max_bytes=10**7) == data


@pytest.mark.parametrize("text", ["not base64!", "abcde", "data:image/png;base64,@@@@"])
def test_it_rejects_invalid_base64(text):
    with pytest.raises(ImageRejected) as caught:
        decode_base64(text, max_bytes=10**7)
    assert caught.value.code == "invalid_base64"


def test_it_refuses_huge_base64_before_decoding_it():
    with pytest.raises(ImageRejected) as caught:
        decode_base64("A" * 4000, max_bytes=1000)
    assert caught.value.code == "image_too_large"


def test_an_empty_data_url_is_empty():
    with pytest.raises(ImageRejected) as caught:
        decode_base64("data:image/png;base64,", max_bytes=10**7)
    assert caught.value.code == "empty_image"


def test_a_gif_decodes_its_first_frame():
    frames = [Image.new("P", (10, 10), color) for color in (1, 2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buffer.getvalue(), **LIMITS).image.size == (10, 10)
