"""int8 on the user's own catalog: calibrate the quantised model on catalog pictures, and
measure how far its vectors and neighbour lists are from fp32's.

int8 vectors get their own model id, which names the quantisation chosen for the CPU
(`resnet50/IMAGENET1K_V1/int8-u8s8`), so switching EMBEDDING_PRECISION, or moving to a CPU
that suits another quantisation, never mixes vectors: `reindex --stale` re-embeds the
catalog with the new model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from catalog.models import CatalogImage
from catalog.pipeline.indexing import original_bytes
from search.decoding import decode_upload
from search.embedding import EmbeddingOptions, get_encoder, model_id_for
from search.embedding.onnx_engine import quantize, reference_images
from search.imaging import ImageRejected

logger = logging.getLogger(__name__)

CALIBRATION_MIN_CATALOG = 50  # fewer catalog pictures than this: calibrate on demo photos
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Calibration:
    path: Path
    model_id: str  # names the quantisation: resnet50/.../int8-u8s8
    source: str  # "catalog" or "demo"
    pictures: int


@dataclass(frozen=True)
class PrecisionAgreement:
    int8_model: str  # the int8 model id, which names its quantisation
    pictures: int
    mean_cosine: float
    min_cosine: float
    top_k: int
    mean_overlap: float  # the share of each picture's fp32 top-k that int8 also returns
    min_overlap: float


def int8_calibrate(*, limit: int = 200, min_catalog: int = CALIBRATION_MIN_CATALOG) -> Calibration:
    """Quantise the configured model to int8, calibrated on up to `limit` catalog pictures
    (or the demo photos when the catalog has fewer than `min_catalog`)."""
    pictures = [image for chunk in catalog_pictures(limit) for image in chunk]
    source = "catalog"
    if len(pictures) < min_catalog:
        pictures, source = reference_images(calibration=True), "demo"
    options = EmbeddingOptions.from_settings(precision="int8", engine="onnx")
    path = quantize(options, pictures)
    return Calibration(
        path=path, model_id=model_id_for(options), source=source, pictures=len(pictures)
    )


def precision_agreement(
    *, limit: int = 500, top_k: int = 10, progress: Progress | None = None
) -> PrecisionAgreement:
    """Embed up to `limit` catalog pictures with fp32 and with int8, and compare: the
    cosine of each picture's two vectors, and how many of its `top_k` nearest neighbours
    (among the same pictures) stay the same."""
    fp32 = get_encoder(EmbeddingOptions.from_settings(precision="fp32"))
    int8 = get_encoder(EmbeddingOptions.from_settings(precision="int8", engine="onnx"))
    full, quantised = [], []
    for chunk in catalog_pictures(limit):
        full.append(fp32.embed_batch(chunk))
        quantised.append(int8.embed_batch(chunk))
        if progress:
            progress(len(chunk))
    if sum(len(rows) for rows in full) < 2:
        raise ValueError("The catalog needs at least 2 readable active images to compare.")
    a, b = np.concatenate(full), np.concatenate(quantised)
    cosines = (a * b).sum(axis=1)
    overlaps = _neighbour_overlap(a, b, min(top_k, len(a) - 1))
    return PrecisionAgreement(
        int8_model=int8.model_id,
        pictures=len(a),
        mean_cosine=float(cosines.mean()),
        min_cosine=float(cosines.min()),
        top_k=min(top_k, len(a) - 1),
        mean_overlap=float(overlaps.mean()),
        min_overlap=float(overlaps.min()),
    )


def catalog_pictures(limit: int, chunk: int = 32) -> Iterator[list[Image.Image]]:
    """Up to `limit` active catalog pictures, spread evenly over the catalog, decoded as
    indexing decodes them, `chunk` at a time (so a big sample never sits in memory)."""
    ids = list(
        CatalogImage.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True)
    )
    if len(ids) > limit:
        ids = (
            [ids[round(i * (len(ids) - 1) / (limit - 1))] for i in range(limit)]
            if limit > 1
            else ids[:1]
        )
    for start in range(0, len(ids), chunk):
        pictures = []
        for row in CatalogImage.objects.filter(pk__in=ids[start : start + chunk]).order_by("pk"):
            try:
                pictures.append(decode_upload(original_bytes(row)).image)
            except (OSError, ImageRejected) as exc:  # a missing original is skipped, not fatal
                logger.warning("Skipping catalog image %s: %s", row.pk, exc)
        if pictures:
            yield pictures


def _neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """For each row, |top-k of a ∩ top-k of b| / k, the row itself left out."""

    def top(vectors):
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -np.inf)
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]

    return np.array([len(set(x) & set(y)) / k for x, y in zip(top(a), top(b), strict=True)])
