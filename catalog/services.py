"""Writes to the catalog. Admin, API, commands and tasks all come through here."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.models import CatalogImage
from catalog.selectors import image_urls
from search.embedding import (
    EmbeddingOptions,
    EmbeddingWeightsUnavailable,
    get_encoder,
    model_id_for,
)
from search.imaging import DecodedImage, ImageRejected, decode_image, too_large_error
from search.vectorstores import VectorRecord, get_vector_store

logger = logging.getLogger(__name__)
Status = CatalogImage.Status


def normalize_tags(tags: str | Iterable[str] | None) -> list[str]:
    """Lower-case, trimmed, unique, sorted; accepts "a, b" or ["a", "b"]."""
    if not tags:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    return sorted({tag.strip().lower() for tag in tags if tag and tag.strip()})


def decode_upload(data: bytes) -> DecodedImage:
    return decode_image(
        data, max_bytes=settings.IMAGE_MAX_BYTES, max_pixels=settings.IMAGE_MAX_PIXELS
    )


def image_create(
    *, file: File, title: str = "", tags: str | Iterable[str] = (), enqueue: bool = True
) -> tuple[CatalogImage, bool]:
    """Add a picture to the catalog and queue its indexing once the row is committed.

    Returns (image, created). The same bytes uploaded again return the existing image.
    Raises ImageRejected when the file is not an acceptable image. Bulk importers pass
    enqueue=False and call `enqueue_indexing` with many ids, to embed in batches.
    """
    if file.size is not None and file.size > settings.IMAGE_MAX_BYTES:
        raise too_large_error(settings.IMAGE_MAX_BYTES)
    file.seek(0)
    data = file.read()
    decoded = decode_upload(data)
    existing = CatalogImage.objects.filter(sha256=decoded.sha256).first()
    if existing:
        return existing, False

    stem = Path(file.name or "").stem
    image = CatalogImage(
        title=(title or stem.replace("_", " ").replace("-", " ")).strip()[:200],
        tags=normalize_tags(tags),
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
    )
    try:
        with transaction.atomic():
            image.image.save(f"upload.{decoded.extension}", ContentFile(data), save=False)
            image.save()
    except IntegrityError:
        # Someone uploaded the same bytes at the same moment; theirs won.
        image.image.delete(save=False)
        existing = CatalogImage.objects.filter(sha256=decoded.sha256).first()
        if existing is None:
            raise
        return existing, False
    if enqueue:
        enqueue_indexing([image.pk])
    return image, True


def image_update(
    *,
    image: CatalogImage,
    title: str | None = None,
    tags: str | Iterable[str] | None = None,
    is_active: bool | None = None,
) -> CatalogImage:
    """Change what curators control; the vector store follows after commit."""
    if title is not None:
        image.title = title.strip()[:200]
    if tags is not None:
        image.tags = normalize_tags(tags)
    if is_active is not None:
        image.is_active = is_active
    image.save(update_fields=["title", "tags", "is_active", "updated_at"])
    # Re-indexing reuses the cached embedding: it refreshes metadata, or removes the
    # vector of an image that was deactivated.
    enqueue_indexing([image.pk])
    return image


def image_delete(*, image: CatalogImage) -> None:
    """Delete the row, then its vector and its file once the deletion is committed."""
    from catalog import tasks

    vector_id, file_name, storage = image.vector_id, image.image.name, image.image.storage
    image.delete()
    transaction.on_commit(partial(tasks.remove_from_index.delay, [vector_id]), robust=True)
    if file_name:
        transaction.on_commit(partial(storage.delete, file_name), robust=True)


def images_retry(*, images: Iterable[CatalogImage]) -> int:
    """Queue images for another indexing attempt (failed, stuck, or missing from the store).

    Indexed rows keep their status: the task re-upserts them from their cached embedding.
    """
    ids = [image.pk for image in images]
    CatalogImage.objects.filter(pk__in=ids).exclude(status=Status.INDEXED).update(
        status=Status.PENDING, failure_reason=""
    )
    enqueue_indexing(ids)
    return len(ids)


def enqueue_indexing(image_ids: Sequence[int]) -> None:
    """Queue indexing in batches after the current transaction commits.

    robust=True: if the broker is down the upload still succeeds; the row stays pending
    and `manage.py reindex --pending` queues it later. Nothing uploaded is lost.
    """
    from catalog import tasks

    batch_size = settings.INDEX_BATCH_SIZE
    for start in range(0, len(image_ids), batch_size):
        batch = list(image_ids[start : start + batch_size])
        transaction.on_commit(partial(tasks.index_images.delay, batch), robust=True)


@dataclass
class IndexReport:
    indexed: list[int] = field(default_factory=list)
    embedded: list[int] = field(default_factory=list)  # ran the model for these
    failed: dict[int, str] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)  # inactive or deleted meanwhile


def images_index(*, image_ids: Sequence[int]) -> IndexReport:
    """Embed (or reuse cached embeddings), upsert vectors, and record the outcome.

    Idempotent: an image already indexed with the current model is upserted again from
    its cached embedding (one vector per id) and its row is left as it was. Inactive
    images have their vector removed instead. Raises VectorStoreError when the store
    fails, leaving computed embeddings cached on the rows for the retry.
    """
    report = IndexReport()
    options = EmbeddingOptions.from_settings()
    model_id = model_id_for(options)
    store = get_vector_store()
    rows = list(CatalogImage.objects.filter(pk__in=image_ids).order_by("pk"))

    inactive = [row for row in rows if not row.is_active]
    if inactive:
        store.delete([row.vector_id for row in inactive])
        report.removed += [row.pk for row in inactive]

    active = [row for row in rows if row.is_active]
    vectors: dict[int, np.ndarray] = {
        row.pk: row.embedding_vector
        for row in active
        if row.embedding is not None and row.embedding_model == model_id
    }
    to_embed = [row for row in active if row.pk not in vectors]
    if to_embed:
        vectors.update(_embed_rows(to_embed, options, report))

    ready = [row for row in active if row.pk in vectors]
    if not ready:
        return report
    store.upsert(vector_record(row, vectors[row.pk], model_id) for row in ready)
    ready_ids = [row.pk for row in ready]
    CatalogImage.objects.filter(pk__in=ready_ids).exclude(status=Status.INDEXED).update(
        status=Status.INDEXED, failure_reason="", indexed_at=timezone.now()
    )
    report.indexed += ready_ids
    _remove_vectors_of_rows_gone_meanwhile(ready_ids, report)
    return report


def _embed_rows(
    rows: list[CatalogImage], options: EmbeddingOptions, report: IndexReport
) -> dict[int, np.ndarray]:
    CatalogImage.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Status.PROCESSING, failure_reason=""
    )
    decoded: dict[int, DecodedImage] = {}
    for row in rows:
        try:
            with row.image.open("rb") as handle:
                decoded[row.pk] = decode_upload(handle.read())
        except ImageRejected as exc:
            _mark_failed([row.pk], f"{exc.code}: {exc.detail}", report)
        except (OSError, ValueError) as exc:
            _mark_failed([row.pk], f"The stored file could not be read: {exc}", report)
    if not decoded:
        return {}
    try:
        encoder = get_encoder(options)
    except EmbeddingWeightsUnavailable as exc:
        _mark_failed(list(decoded), str(exc), report)
        return {}
    embeddings = encoder.embed_batch([item.image for item in decoded.values()])
    vectors = dict(zip(decoded, embeddings, strict=True))
    for pk, vector in vectors.items():
        CatalogImage.objects.filter(pk=pk).update(
            embedding=vector.astype(np.float32).tobytes(), embedding_model=encoder.model_id
        )
    report.embedded += list(vectors)
    return vectors


def images_mark_failed(*, image_ids: Sequence[int], reason: str) -> None:
    """Record a final failure (after retries) so a curator can see it and retry."""
    _mark_failed(image_ids, reason, IndexReport())


def _mark_failed(image_ids: Sequence[int], reason: str, report: IndexReport) -> None:
    CatalogImage.objects.filter(pk__in=image_ids).exclude(status=Status.INDEXED).update(
        status=Status.FAILED, failure_reason=reason[:2000]
    )
    for pk in image_ids:
        report.failed[pk] = reason
    logger.warning("Indexing failed for images %s: %s", list(image_ids), reason)


def _remove_vectors_of_rows_gone_meanwhile(ids: list[int], report: IndexReport) -> None:
    """A row deleted or deactivated while we embedded must not keep a vector."""
    still_active = set(
        CatalogImage.objects.filter(pk__in=ids, is_active=True).values_list("pk", flat=True)
    )
    gone = [pk for pk in ids if pk not in still_active]
    if gone:
        get_vector_store().delete([str(pk) for pk in gone])
        report.removed += gone


def vector_record(row: CatalogImage, vector: np.ndarray, model_id: str) -> VectorRecord:
    """What the vector store keeps for a catalog image: its vector and a little metadata."""
    image_url, _ = image_urls(row)
    return VectorRecord(
        id=row.vector_id,
        vector=vector,
        metadata={
            "catalog_id": row.pk,
            "title": str(row),
            "image_url": image_url,
            "tags": list(row.tags),
            "model": model_id,
        },
    )


def vectors_remove(*, vector_ids: Sequence[str]) -> None:
    get_vector_store().delete(list(vector_ids))
