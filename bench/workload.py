"""What the end-to-end benchmark sends: a query JPEG, photos to index, catalog vectors.

Everything is made from scikit-image's bundled sample photos, deterministically (seeded),
into a temporary folder: nothing is downloaded and nothing is committed.
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

SAMPLES = Path(skimage.data.__file__).parent
COLOUR_PHOTOS = [
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg", "camera.png",
]  # fmt: skip
# Synthetic catalog vectors get ids far above any real catalog image's, so the search's
# database filter drops them from results without a database row for each.
SYNTHETIC_ID_BASE = 10**12
VECTOR_DIMENSION = 2048  # ResNet50's pooled features
UPSERT_CHUNK = 5_000


def query_jpeg(pixels: int = 1_000_000) -> bytes:
    """A JPEG of about `pixels` pixels (quality 90, as the page's canvas encodes)."""
    image = Image.open(SAMPLES / "coffee.png").convert("RGB")
    return _jpeg(_with_grain(_resized_to(image, pixels), random.Random(1)), quality=90)


def search_body(jpeg: bytes, top_k: int = 12) -> bytes:
    """The JSON the search page posts: a data: URL of the JPEG and a top_k."""
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return json.dumps({"image": data_url, "top_k": top_k}).encode()


def write_index_photos(folder: Path, count: int, pixels: int = 2_000_000) -> list[Path]:
    """`count` distinct JPEGs of about `pixels` pixels: crops, rotations, resizes, grain
    and recompression of the sample photos, as a camera roll would vary."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(SAMPLES / name).convert("RGB") for name in COLOUR_PHOTOS]
    paths = []
    for number in range(count):
        rng = random.Random(number)
        image = sources[number % len(sources)]
        width, height = image.size
        crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
        left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        photo = image.crop((left, top, left + crop_w, top + crop_h))
        photo = photo.rotate(rng.choice([0, 90, 180, 270]) + rng.uniform(-8, 8), expand=True)
        photo = _with_grain(_resized_to(photo, pixels), rng)
        path = folder / f"photo-{number:03d}.jpg"
        path.write_bytes(_jpeg(photo, quality=rng.randint(75, 95)))
        paths.append(path)
    return paths


def fill_store(store, total: int, seed: int = 0) -> int:
    """Upserts synthetic vectors until `store` holds `total`; returns how many it added.

    Non-negative and L2-normalised, like pooled ReLU features; exponential values give
    them a few large components and many small ones.
    """
    have = store.count()
    rng = np.random.default_rng(seed + have)
    from search.vectorstores.base import VectorRecord

    for start in range(have, total, UPSERT_CHUNK):
        stop = min(start + UPSERT_CHUNK, total)
        matrix = rng.standard_exponential((stop - start, VECTOR_DIMENSION), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        store.upsert(
            VectorRecord(id=str(SYNTHETIC_ID_BASE + start + row), vector=vector)
            for row, vector in enumerate(matrix)
        )
    return max(0, total - have)


def _resized_to(image: Image.Image, pixels: int) -> Image.Image:
    scale = (pixels / (image.width * image.height)) ** 0.5
    size = (round(image.width * scale), round(image.height * scale))
    return image.resize(size, Image.Resampling.BICUBIC)


def _with_grain(image: Image.Image, rng: random.Random) -> Image.Image:
    """Sensor-like noise, so the JPEGs are as large and as slow to decode as photos are,
    not the smooth surfaces an upscaled picture would be."""
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 4, (image.height, image.width, 1))
    pixels = np.asarray(image, dtype=np.float32) + noise.astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
