"""Whatever bytes arrive, the decoder answers with a picture or a known refusal, never a 500."""

import base64
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from search.imaging import SUPPORTED_FORMATS, ImageRejected, decode_base64, decode_image
from tests.conftest import encode, photo
from tests.search.test_imaging import heic, mpo, png16

KNOWN_CODES = {
    "empty_image",
    "image_too_large",
    "invalid_base64",
    "not_an_image",
    "unsupported_format",
    "corrupt_image",
    "too_many_pixels",
    "bad_dimensions",
}
LIMITS = {"max_bytes": 200_000, "max_pixels": 1_000_000}
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def samples() -> dict[str, bytes]:
    """A small real photo in every supported format and shape."""
    small = photo("chelsea.png").resize((60, 40))
    frames = [small.convert("P"), small.rotate(90).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    return {
        "jpeg": encode(small, quality=80),
        "progressive jpeg": encode(small, progressive=True),
        "cmyk jpeg": encode(small.convert("CMYK")),
        "mpo": mpo(small),
        "png": encode(small, "PNG"),
        "palette png": encode(small.convert("P"), "PNG", transparency=0),
        "16-bit png": png16(np.asarray(small, dtype=np.uint16) * 257),
        "gray 16-bit png": encode(
            Image.fromarray(np.asarray(small.convert("L"), np.uint16) * 257), "PNG"
        ),
        "webp": encode(small, "WEBP"),
        "gif": gif.getvalue(),
        "bmp": encode(small, "BMP"),
        "tiff": encode(small, "TIFF", compression="tiff_lzw"),
        "heic": heic(small, quality=60),
        "avif": encode(small, "AVIF", quality=60),
    }


SAMPLES = samples()


def assert_decoded_or_refused(data: bytes, shrink_to: int | None = None) -> None:
    try:
        decoded = decode_image(data, **LIMITS, shrink_to=shrink_to)
    except ImageRejected as refusal:
        assert refusal.code in KNOWN_CODES
        assert refusal.detail
        return
    assert decoded.image.mode == "RGB"
    assert decoded.image.width > 0 and decoded.image.height > 0
    assert decoded.width * decoded.height <= LIMITS["max_pixels"]
    assert decoded.format in SUPPORTED_FORMATS


@st.composite
def damaged(draw) -> bytes:
    """A real encoded image with some bytes overwritten, then maybe cut short."""
    data = bytearray(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def test_every_sample_decodes():
    for name, data in SAMPLES.items():
        assert decode_image(data, **LIMITS).image.size == (60, 40), name


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_are_refused_with_a_known_code(data):
    assert_decoded_or_refused(data)


@FAST
@given(damaged(), st.sampled_from([None, 16]))
def test_damaged_images_decode_or_are_refused_with_a_known_code(data, shrink_to):
    assert_decoded_or_refused(data, shrink_to)


@FAST
@given(st.one_of(st.text(max_size=300), damaged().map(lambda d: base64.b64encode(d).decode())))
def test_any_base64_text_gives_bytes_or_a_known_refusal(text):
    try:
        data = decode_base64(text, max_bytes=LIMITS["max_bytes"])
    except ImageRejected as refusal:
        assert refusal.code in KNOWN_CODES
        return
    assert isinstance(data, bytes)
    assert_decoded_or_refused(data) if data else None


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_point_of_a_small_image_is_safe(name):
    data = SAMPLES[name]
    for end in range(0, len(data), max(1, len(data) // 64)):
        assert_decoded_or_refused(data[:end])
