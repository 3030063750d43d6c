"""A small file never costs a gigabyte: decoding a picture at the pixel cap, in every mode
the decoder accepts, stays within a fixed memory bound.

Each case runs in a fresh process and measures the rise of its peak resident memory (the
kernel's VmHWM, reset after the imports) over what it held before the call: Pillow's and
libtiff's own allocations count, which tracemalloc would not see.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from django.conf import settings
from PIL import Image

from search.embedding import EmbeddingOptions
from tests.search.test_imaging import heic, png16

MB = 1024 * 1024
QUERY_BOUND = 300 * MB  # the bound for one query at SEARCH_MAX_PIXELS
ROOT = Path(__file__).resolve().parents[2]

# Runs in the child: read the file, import, reset the peak, call, print the peak's rise.
MEASURE = r"""
import sys
from pathlib import Path

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

kind, path, max_pixels, shrink_to = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = Path(path).read_bytes()
from search.imaging import _open_formats, decode_image
from catalog.hosting.base import make_thumbnail
_open_formats()
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")  # VmHWM := VmRSS
before = status("VmRSS")
if kind == "thumbnail":
    make_thumbnail(data, shrink_to)
else:
    decoded = decode_image(data, max_bytes=len(data), max_pixels=max_pixels, shrink_to=shrink_to)
    assert decoded.image.mode == "RGB", decoded.image.mode
    assert decoded.width * decoded.height > 1_000_000, (decoded.width, decoded.height)
print(status("VmHWM") - before)
"""


def peak_rise(tmp_path: Path, data: bytes, *, max_pixels: int, shrink_to: int, kind="decode"):
    """How far peak resident memory rose, in bytes, while a fresh process decoded `data`."""
    path = tmp_path / "picture"
    path.write_bytes(data)
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, kind, str(path), str(max_pixels), str(shrink_to)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return int(completed.stdout.split()[-1])


# --- Pictures at the cap that compress to a few kB ----------------------------------------


def ramps(size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Gray ramps down and across the picture: real tones to convert and scale, yet each
    row repeats the last, so any compressor folds them up."""
    down = Image.linear_gradient("L").resize(size)
    across = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)
    return down, across


def rgb(size) -> Image.Image:
    down, across = ramps(size)
    return Image.merge("RGB", (down, across, Image.new("L", size, 90)))


def rgba(size) -> Image.Image:
    down, across = ramps(size)
    return Image.merge("RGBA", (down, across, Image.new("L", size, 90), across))


def gray(size) -> Image.Image:
    return ramps(size)[0]


def levels(size, dtype, scale: float, offset: float = 0) -> np.ndarray:
    ramp = np.asarray(gray(size), dtype=np.float32)
    return (ramp * np.float32(scale) + np.float32(offset)).astype(dtype)


def pil(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, compression="zlib", **options)
    return buffer.getvalue()


def palette(size) -> Image.Image:
    return gray(size).quantize(64, dither=Image.Dither.NONE)


DEFLATE = {"compression": "tiff_adobe_deflate"}

# Every mode a supported parser can hand over (TIFF's OPEN_INFO is the widest: 1, L, LA, La,
# P, PA, RGB, RGBA, CMYK, YCbCr, LAB, I;16, I;16B, I, F), each from a format that writes it,
# and every supported format at least once. HSV is accepted by to_8bit but no supported
# parser produces it.
CASES: dict[str, Callable[[tuple[int, int]], bytes]] = {
    "1 png": lambda s: pil(gray(s).convert("1", dither=Image.Dither.NONE), "PNG"),
    "L png": lambda s: pil(gray(s), "PNG"),
    "LA png": lambda s: pil(Image.merge("LA", ramps(s)), "PNG"),
    "La tiff (premultiplied)": lambda s: tiff(
        np.stack([np.asarray(c) for c in ramps(s)], axis=-1), extrasamples=["assocalpha"]
    ),
    "P png with a transparent index": lambda s: pil(palette(s), "PNG", transparency=3),
    "P gif": lambda s: pil(palette(s), "GIF"),
    "1 bmp": lambda s: pil(gray(s).convert("1", dither=Image.Dither.NONE), "BMP"),
    "PA tiff": lambda s: pil(palette(s).convert("PA"), "TIFF", **DEFLATE),
    "RGB png": lambda s: pil(rgb(s), "PNG"),
    "RGB jpeg": lambda s: pil(rgb(s), "JPEG", quality=50),
    "RGB tiff": lambda s: pil(rgb(s), "TIFF", **DEFLATE),
    "RGB webp": lambda s: pil(rgb(s), "WEBP", quality=10, method=0),
    "RGB webp (lossless)": lambda s: pil(rgb(s), "WEBP", lossless=True, method=0),
    "RGB 16-bit png": lambda s: png16(np.stack([levels(s, np.uint16, 257)] * 3, axis=-1)),
    "RGBA png": lambda s: pil(rgba(s), "PNG"),
    "RGBA tiff": lambda s: pil(rgba(s), "TIFF", **DEFLATE),
    "RGBA webp": lambda s: pil(rgba(s), "WEBP", quality=10, method=0),
    "CMYK tiff": lambda s: pil(rgb(s).convert("CMYK"), "TIFF", **DEFLATE),
    "CMYK jpeg": lambda s: pil(rgb(s).convert("CMYK"), "JPEG", quality=50),
    "YCbCr tiff (compressed, read through libtiff as RGB)": lambda s: pil(
        rgb(s).convert("YCbCr"), "TIFF", **DEFLATE
    ),
    # Only an uncompressed YCbCr TIFF opens as YCbCr: 3 bytes a pixel, so IMAGE_MAX_BYTES
    # holds it below the cap.
    "YCbCr tiff (uncompressed)": lambda s: pil(rgb(s).convert("YCbCr"), "TIFF"),
    "LAB tiff": lambda s: pil(Image.merge("LAB", (gray(s), *ramps(s))), "TIFF", **DEFLATE),
    "I;16 png": lambda s: pil(Image.fromarray(levels(s, np.uint16, 257)), "PNG"),
    "I;16 tiff": lambda s: tiff(levels(s, np.uint16, 257)),
    "I;16B tiff": lambda s: tiff(levels(s, np.uint16, 257), byteorder=">"),
    "I tiff (32-bit, any range)": lambda s: tiff(levels(s, np.int32, 1e6, -1e8)),
    "F tiff (0 to 1)": lambda s: tiff(levels(s, np.float32, 1 / 255)),
    "F tiff (any range)": lambda s: tiff(levels(s, np.float32, 1e3, -5e4)),
    "HEIF": lambda s: heic(rgb(s), quality=10),
}


def query_limits() -> dict[str, int]:
    """What search.services.search_similar passes to decode_image."""
    return {
        "max_pixels": min(settings.SEARCH_MAX_PIXELS, settings.IMAGE_MAX_PIXELS),
        "shrink_to": EmbeddingOptions.from_settings().resize_size,
    }


def at_cap(max_pixels: int, case: str = "") -> tuple[int, int]:
    """The largest picture the pixel cap lets through (or IMAGE_MAX_BYTES, for `case`s
    that cannot be compressed)."""
    if "uncompressed" in case:
        max_pixels = min(max_pixels, settings.IMAGE_MAX_BYTES // 3 - 4096)
    side = int(max_pixels**0.5)
    return side, max_pixels // side


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_query_at_the_pixel_cap_stays_within_its_memory_bound(case, tmp_path):
    limits = query_limits()
    assert limits["max_pixels"] == 25_000_000  # the default the bound was set for
    data = CASES[case](at_cap(limits["max_pixels"], case))
    assert len(data) <= settings.IMAGE_MAX_BYTES  # a file any door lets in
    rise = peak_rise(tmp_path, data, **limits)
    assert rise < QUERY_BOUND, f"{case}: peak rose {rise / MB:.0f} MB"


# The catalog's cap is higher (IMAGE_MAX_PIXELS): there the bound is the picture loaded once
# at 4 bytes a pixel (how Pillow holds RGB, RGBA, LA, CMYK, I and F), plus strips and
# buffers. A WebP costs three such copies: libwebp's two canvases, and the frame it hands
# over (Pillow's own load() held a fourth).
CATALOG_CASES = [
    "RGBA png",
    "LA png",
    "P png with a transparent index",
    "I;16 tiff",
    "F tiff (any range)",
    "RGB webp",
]
OVERHEAD = 40 * MB


def catalog_bound(case: str, max_pixels: int) -> int:
    copies = 3 if "webp" in case else 1
    return copies * 4 * max_pixels + OVERHEAD


@pytest.mark.slow
@pytest.mark.parametrize("case", CATALOG_CASES)
def test_catalog_indexing_at_its_pixel_cap_holds_the_picture_once_and_little_more(case, tmp_path):
    max_pixels = settings.IMAGE_MAX_PIXELS  # what search.decoding.decode_upload passes
    data = CASES[case](at_cap(max_pixels))
    rise = peak_rise(tmp_path, data, max_pixels=max_pixels, shrink_to=query_limits()["shrink_to"])
    assert rise < catalog_bound(case, max_pixels), f"{case}: peak rose {rise / MB:.0f} MB"


@pytest.mark.slow
@pytest.mark.parametrize("case", CATALOG_CASES)
def test_a_thumbnail_at_the_catalog_cap_holds_the_picture_once_and_little_more(case, tmp_path):
    max_pixels = settings.IMAGE_MAX_PIXELS
    data = CASES[case](at_cap(max_pixels))
    rise = peak_rise(
        tmp_path, data, max_pixels=0, shrink_to=settings.THUMBNAIL_SIZE, kind="thumbnail"
    )
    assert rise < catalog_bound(case, max_pixels), f"{case}: peak rose {rise / MB:.0f} MB"
