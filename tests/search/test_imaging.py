import base64
import contextlib
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pillow_heif
import pytest
import tifffile
from PIL import Image

from search.imaging import ImageRejected, decode_base64, decode_image, to_8bit
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


# --- Real camera and editor shapes ------------------------------------------------------


def mpo(image: Image.Image) -> bytes:
    """A JPEG with a second MPF picture, as phones write (a depth map, a preview)."""
    data = encode(image, "MPO", save_all=True, append_images=[image.resize((64, 48))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    return data


def heic(image: Image.Image, quality: int = 80) -> bytes:
    """An iPhone-style HEIC, written without registering pillow-heif with Pillow: the
    decoder must do that itself."""
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=quality)
    return buffer.getvalue()


def gray16(image: Image.Image) -> np.ndarray:
    """The photo's gray levels spread over 16 bits, as a scanner or raw converter writes."""
    return np.asarray(image.convert("L"), dtype=np.uint16) * 257


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand: Pillow cannot write 16-bit RGB."""
    height, width = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def mean_gray(image: Image.Image) -> float:
    return float(np.asarray(image.convert("L"), dtype=np.float64).mean())


def test_a_phone_jpeg_with_a_second_mpf_picture_is_a_jpeg():
    decoded = decode_image(mpo(photo("chelsea.png")), **LIMITS)
    assert decoded.format == "JPEG"
    assert decoded.extension == "jpg"
    assert (decoded.width, decoded.height) == (451, 300)  # the first frame, not the preview


def test_an_iphone_heic_is_accepted():
    data = heic(photo("chelsea.png"))
    decoded = decode_image(data, **LIMITS)
    assert decoded.format == "HEIF"
    assert decoded.extension == "heic"
    assert decoded.image.mode == "RGB"
    assert abs(mean_gray(decoded.image) - mean_gray(photo("chelsea.png"))) < 3


def test_an_avif_is_accepted():
    decoded = decode_image(encode(photo("chelsea.png"), "AVIF", quality=80), **LIMITS)
    assert (decoded.format, decoded.extension) == ("AVIF", "avif")


SIXTEEN_BIT = {
    "png I;16": lambda gray: encode(Image.fromarray(gray), "PNG"),
    "tiff I;16": lambda gray: encode(Image.fromarray(gray), "TIFF"),
    "tiff I;16B": lambda gray: tiff(gray, byteorder=">"),
    "tiff I (32-bit)": lambda gray: tiff(gray.astype(np.int32)),
    "tiff F (0 to 1)": lambda gray: tiff(gray.astype(np.float32) / 65535),
}


@pytest.mark.parametrize("shape", SIXTEEN_BIT)
def test_a_16_bit_grayscale_image_is_scaled_to_8_bits_not_clamped(shape):
    original = photo("camera.png")
    decoded = decode_image(SIXTEEN_BIT[shape](gray16(original)), **LIMITS)
    assert decoded.image.mode == "RGB"
    assert abs(mean_gray(decoded.image) - mean_gray(original)) < 1.5


def test_a_16_bit_rgb_png_keeps_its_tones():
    original = photo("chelsea.png")
    data = png16(np.asarray(original, dtype=np.uint16) * 257)
    decoded = decode_image(data, **LIMITS)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(original))


def test_a_cmyk_jpeg_keeps_its_colours():
    original = photo("chelsea.png")
    decoded = decode_image(encode(original.convert("CMYK"), "JPEG", quality=95), **LIMITS)
    difference = np.abs(
        np.asarray(decoded.image, dtype=np.int16) - np.asarray(original, dtype=np.int16)
    )
    assert difference.mean() < 6


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_a_bogus_exif_orientation_leaves_the_image_as_stored(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(photo("chelsea.png"), exif=exif.tobytes()), **LIMITS)
    assert decoded.image.size == (451, 300)


def test_a_palette_image_with_a_transparent_index_is_flattened_onto_white():
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    decoded = decode_image(encode(image, "PNG", transparency=1), **LIMITS)
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)


def test_a_gray_image_with_alpha_is_flattened_onto_white():
    image = Image.new("LA", (8, 8), (0, 0))
    assert decode_image(encode(image, "PNG"), **LIMITS).image.getpixel((0, 0)) == (255,) * 3


def test_a_one_bit_image_is_black_and_white_rgb():
    image = photo("camera.png").convert("1")
    decoded = decode_image(encode(image, "PNG"), **LIMITS)
    assert set(np.unique(np.asarray(decoded.image))) <= {0, 255}


def test_an_animated_webp_decodes_its_first_frame():
    first = photo("chelsea.png")
    data = encode(first, "WEBP", save_all=True, append_images=[Image.new("RGB", first.size)])
    assert abs(mean_gray(decode_image(data, **LIMITS).image) - mean_gray(first)) < 3


def test_it_rejects_truncated_png():
    data = photo_bytes(format="PNG")
    assert rejection(data[: len(data) // 2]) == "corrupt_image"


@pytest.mark.parametrize("data", [b"\xff", b"\x89", b"G"])
def test_it_rejects_a_one_byte_file(data):
    assert rejection(data) == "not_an_image"


@pytest.mark.parametrize("size", [(1, 100_000), (100_000, 1), (2100, 100)])
def test_it_refuses_a_sliver_the_model_cannot_resize(size):
    assert rejection(encode(Image.new("L", size), "PNG")) == "bad_dimensions"


def test_a_wide_panorama_is_still_accepted():
    assert decode_image(encode(Image.new("RGB", (1900, 100)), "PNG"), **LIMITS).width == 1900


def test_a_decompression_bomb_png_is_refused_from_its_header():
    side = 30_000  # 900 M pixels of 1-bit zeros: 112 MB once decoded, 110 kB compressed
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    rows = zlib.compress(bytes((side // 8 + 1) * side), 9)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows)
    assert rejection(data, max_pixels=40_000_000) == "too_many_pixels"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# Malformed files of formats the service does not take: their parsers must never run
# (a PPM parser raising ValueError must not read as "corrupt", nor a QOI header as "too big").
@pytest.mark.parametrize(
    "data",
    [
        b"P6",
        b"P6 99999999 99999999 255\n",
        b"qoif\xff\xff\xff\xff\xff\xff\xff\xff\x03\x00",
        b"\x0a\x05",
    ],
)
def test_it_names_other_formats_unsupported_without_parsing_them(data):
    assert rejection(data) == "unsupported_format"


# --- Decoding at the size the model needs -------------------------------------------


def big_photo(size=(4000, 3000)) -> Image.Image:
    return photo("chelsea.png").resize(size, Image.Resampling.BILINEAR)


def test_a_big_jpeg_is_decoded_at_a_reduced_scale_that_still_covers_the_model_input():
    data = encode(big_photo(), quality=90)
    decoded = decode_image(data, max_bytes=10**8, max_pixels=40_000_000, shrink_to=256)
    assert (decoded.width, decoded.height) == (4000, 3000)  # the original's size, for the row
    assert 256 <= min(decoded.image.size) <= 512
    assert decoded.image.width * decoded.image.height * 3 < 4000 * 3000 * 3 / 40


def test_a_big_png_is_box_reduced_to_cover_the_model_input():
    data = encode(big_photo((1600, 1200)), "PNG", compress_level=1)
    decoded = decode_image(data, max_bytes=10**8, max_pixels=40_000_000, shrink_to=232)
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert 232 <= min(decoded.image.size) < 2 * 232


def test_a_small_image_is_not_shrunk():
    decoded = decode_image(photo_bytes("chelsea.png"), **LIMITS, shrink_to=256)
    assert decoded.image.size == (451, 300)


def test_a_shrunk_rotated_phone_photo_reports_its_upright_full_size():
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = big_photo().transpose(Image.Transpose.ROTATE_90)  # 3000 x 4000 stored sideways
    data = encode(stored, exif=exif.tobytes())
    decoded = decode_image(data, max_bytes=10**8, max_pixels=40_000_000, shrink_to=256)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.image.width > decoded.image.height


def test_too_many_pixels_is_refused_from_the_header_before_any_pixel_is_decoded():
    data = encode(big_photo(), quality=90)[:4096]  # the header, and pixels cut short
    assert rejection(data, max_bytes=10**8, max_pixels=1_000_000) == "too_many_pixels"


# --- Base64 --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["ÿØÿà", "AAAA\u00a0AAAA", "data:image/png;base64,AAAA\u2028"])
def test_non_ascii_base64_is_invalid(text):
    with pytest.raises(ImageRejected) as caught:
        decode_base64(text, max_bytes=10**7)
    assert caught.value.code == "invalid_base64"


def wrapped(data: bytes) -> str:
    return base64.encodebytes(data).decode()  # 76 characters a line, as MIME writes it


def peak_memory(function, *args, **kwargs) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(ImageRejected):
            function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_oversized_base64_body_is_refused_before_it_is_copied():
    text = wrapped(bytes(15_000_000))  # 20 MB of line-wrapped base64
    assert peak_memory(decode_base64, text, max_bytes=10_000_000) < 100_000


def test_line_wrapped_base64_is_decoded_without_splitting_it_into_lines():
    data = bytes(range(256)) * 40_000  # 10 MB
    text = wrapped(data)
    assert decode_base64(text, max_bytes=len(data)) == data
    # The text's ASCII copy with its whitespace dropped, and the decoded bytes.
    assert peak_memory(decode_base64, text, max_bytes=len(data)) < 2.2 * len(text)


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "IMAGENET1K_V2", "random"])
def test_images_shrink_to_the_size_the_weights_transform_resizes_to(weights):
    from torchvision.models import ResNet50_Weights

    from search.embedding import EmbeddingOptions

    named = weights if weights != "random" else "IMAGENET1K_V1"  # random uses V1's transform
    expected = ResNet50_Weights[named].transforms().resize_size[0]
    assert EmbeddingOptions(weights=weights).resize_size == expected


# --- Every mode, at any size, converted the same way -----------------------------------


def test_a_premultiplied_gray_and_alpha_tiff_is_flattened_onto_white():
    # TIFF's associated alpha opens as Pillow's "La", which convert() cannot take to RGBA.
    gray_alpha = np.zeros((8, 8, 2), np.uint8)  # black, fully transparent
    data = tiff(gray_alpha, extrasamples=["assocalpha"])
    assert decode_image(data, **LIMITS).image.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "levels",
    [np.full((40, 60), -5.0, np.float32), np.full((40, 60), 1e6, np.float32)],
    ids=["negative", "past 16 bits"],
)
def test_a_flat_picture_with_levels_out_of_every_range_is_not_corrupt(levels):
    assert decode_image(tiff(levels), **LIMITS).image.size == (60, 40)


def tall_levels(dtype, scale: float, offset: float = 0) -> np.ndarray:
    """A picture tall enough to be converted in several strips, with a different range of
    values in each: its scaling must still follow the whole picture's range."""
    rows = np.linspace(0, 1, 3000, dtype=np.float64)[:, None] ** 2
    noise = np.random.default_rng(7).random((3000, 700))
    return ((rows * 0.98 + noise / 50) * scale + offset).astype(dtype)


@pytest.mark.parametrize(
    "levels",
    [
        tall_levels(np.float32, 1e3, -5e4),
        tall_levels(np.float32, 1),
        tall_levels(np.int32, 1e6, -1e8),
        tall_levels(np.uint16, 65535),
    ],
    ids=["F any range", "F 0 to 1", "I any range", "I;16"],
)
@pytest.mark.parametrize("shrink_to", [None, 232, 256])
def test_a_big_deep_picture_converted_strip_by_strip_matches_converting_it_whole(levels, shrink_to):
    decoded = decode_image(
        tiff(levels), max_bytes=10**8, max_pixels=40_000_000, shrink_to=shrink_to
    )
    whole = whole_picture_to_8bit(levels)
    factor = min(whole.size) // shrink_to if shrink_to else 1
    expected = whole.reduce(factor) if factor >= 2 else whole
    assert np.array_equal(np.asarray(decoded.image), np.asarray(expected))


def whole_picture_to_8bit(levels: np.ndarray) -> Image.Image:
    """The scaling the decoder documents, done on the whole picture at once in float64."""
    values = np.nan_to_num(levels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if levels.dtype == np.uint16:
        scaled = (levels >> 8).astype(np.float64)
    elif low >= 0 and high <= 1 and levels.dtype == np.float32:
        scaled = values * 255
    elif low >= 0 and high <= 255:
        scaled = values
    elif low >= 0 and high <= 65535:
        scaled = values / 257
    else:
        scaled = (values - low) * (255 / (high - low))
    gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    return gray.convert("RGB")


def viewed_whole(image: Image.Image) -> Image.Image:
    """The picture as a viewer shows it, converted at full size in one go."""
    if image.mode in ("LA", "La", "PA", "RGBa", "RGBA") or "transparency" in image.info:
        rgba = image.convert("LA").convert("RGBA") if image.mode == "La" else image
        rgba = rgba.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"]


@pytest.mark.parametrize("mode", [*MODES, "P with a transparent index"])
@pytest.mark.parametrize("shrink_to", [None, 200])
def test_a_big_picture_in_any_mode_is_reduced_as_if_it_were_converted_whole_first(mode, shrink_to):
    # Tall enough to be converted in several strips; the factor does not divide its height.
    source = big_photo((1500, 2900)).convert("RGBA")
    source.putalpha(Image.linear_gradient("L").resize(source.size))
    if mode == "P with a transparent index":
        image = source.convert("RGB").convert("P")
        image.info["transparency"] = 3
    else:
        image = source.convert(mode)
    factor = min(image.size) // shrink_to if shrink_to else 1
    converted = to_8bit(image.copy(), reduce_by=factor, on_white=True)
    whole = viewed_whole(image)
    expected = whole.reduce(factor) if factor >= 2 else whole
    assert converted.mode == "RGB"
    assert np.array_equal(np.asarray(converted), np.asarray(expected))


@pytest.mark.parametrize("mode", MODES)
def test_a_reduced_picture_keeps_its_alpha_when_not_flattened(mode):
    image = big_photo((1500, 2900)).convert("RGBA").convert(mode)
    converted = to_8bit(image.copy(), reduce_by=4)
    assert converted.mode in ("RGB", "RGBA", "L")
    assert converted.size == (375, 725)
    assert (converted.mode == "RGBA") == (mode in ("LA", "La", "PA", "RGBA", "RGBa"))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_webp_decodes_to_the_pixels_pillow_loads(mode):
    # The decoder reads WebP frames itself, to hold one full-size copy fewer.
    picture = photo("chelsea.png").convert(mode)
    if mode == "RGBA":
        picture.putalpha(Image.linear_gradient("L").resize(picture.size))
    data = encode(picture, "WEBP", lossless=True)
    with Image.open(io.BytesIO(data)) as pillow:
        pillow.load()
        expected = viewed_whole(pillow)
    assert np.array_equal(np.asarray(decode_image(data, **LIMITS).image), np.asarray(expected))


def test_a_transparent_webp_is_flattened_onto_white():
    data = encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "WEBP", lossless=True)
    assert decode_image(data, **LIMITS).image.getpixel((0, 0)) == (255, 255, 255)
