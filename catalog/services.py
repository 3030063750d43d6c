"""Writes to the catalog. Admin, API, commands and tasks all come through here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.hosting import get_image_host
from catalog.models import CatalogImage
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


def after_commit(func: Callable[..., object], *args: object) -> None:
    """Call func(*args) once the current transaction commits.

    robust: if it fails (the broker is down, say), the error is logged and the write that
    was committed stands; the periodic `requeue_stuck` picks up what was not queued.
    """

    def call() -> None:  # a real function: Django's error log needs a __qualname__
        func(*args)

    transaction.on_commit(call, robust=True)


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
    *,
    file: File,
    title: str = "",
    tags: str | Iterable[str] = (),
    is_active: bool = True,
    enqueue: bool = True,
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
        is_active=is_active,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.extension,
    )
    try:
        with transaction.atomic():
            # Staged locally: the request stays fast whatever the image host does.
            image.staged_file.save(f"upload.{decoded.extension}", ContentFile(data), save=False)
            image.save()
    except IntegrityError:
        # Someone uploaded the same bytes at the same moment; theirs won.
        image.staged_file.delete(save=False)
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


def images_set_active(*, images: Iterable[CatalogImage], is_active: bool) -> int:
    """Activate or deactivate many images. Search results check the flag in the database,
    so a deactivated image leaves them at once; its vector goes in the background."""
    ids = [image.pk for image in images]
    CatalogImage.objects.filter(pk__in=ids).update(is_active=is_active, updated_at=timezone.now())
    enqueue_indexing(ids)
    return len(ids)


def image_delete(*, image: CatalogImage) -> None:
    """Delete the row; once that is committed, its vector, hosted files and staged copy."""
    from catalog import tasks

    vector_id, staged = image.vector_id, image.staged_file
    image.delete()
    after_commit(tasks.remove_from_index.delay, [vector_id])
    if image.hosted_key:
        after_commit(tasks.remove_hosted_image.delay, image.image_host, image.hosted_key)
    if staged:
        after_commit(staged.storage.delete, staged.name)


def images_retry(*, images: Iterable[CatalogImage], enqueue: bool = True) -> int:
    """Queue images for another indexing attempt (failed, stuck, or missing from the store).

    Indexed rows keep their status: the task re-upserts them from their cached embedding.
    """
    ids = [image.pk for image in images]
    CatalogImage.objects.filter(pk__in=ids).exclude(status=Status.INDEXED).update(
        status=Status.PENDING, failure_reason="", updated_at=timezone.now()
    )
    if enqueue:
        enqueue_indexing(ids)
    return len(ids)


def enqueue_indexing(image_ids: Sequence[int]) -> None:
    """Queue indexing in batches after the current transaction commits.

    If the broker is down the upload still succeeds; the row stays pending and
    `requeue_stuck` (or `manage.py reindex --pending`) queues it later. Nothing is lost.
    """
    from catalog import tasks

    batch_size = settings.INDEX_BATCH_SIZE
    for start in range(0, len(image_ids), batch_size):
        batch = list(image_ids[start : start + batch_size])
        after_commit(tasks.index_images.delay, batch)


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
    originals: dict[int, bytes] = {}  # read once, for both embedding and publishing
    if to_embed:
        vectors.update(_embed_rows(to_embed, options, report, originals))

    ready = [row for row in active if row.pk in vectors]
    if not ready:
        return report
    _publish_rows([row for row in ready if not row.is_published], originals)
    store.upsert(vector_record(row, vectors[row.pk], model_id) for row in ready)
    ready_ids = [row.pk for row in ready]
    now = timezone.now()
    CatalogImage.objects.filter(pk__in=ready_ids).exclude(status=Status.INDEXED).update(
        status=Status.INDEXED, failure_reason="", indexed_at=now, updated_at=now
    )
    report.indexed += ready_ids
    _remove_vectors_of_rows_gone_meanwhile(ready_ids, report)
    _unstage_published(ready)
    return report


def _publish_rows(rows: list[CatalogImage], originals: dict[int, bytes]) -> None:
    """Publish originals to the image host and record where, one row at a time.

    Raises ImageHostError when the host fails; rows published before that keep their
    record, so the task's retry goes on from where it stopped.
    """
    if not rows:
        return
    host = get_image_host()
    for row in rows:
        data = originals.get(row.pk) or _original_bytes(row)
        hosted = host.publish(image_id=row.pk, sha256=row.sha256, data=data, extension=row.format)
        row.image_host, row.hosted_key = host.name, hosted.key
        row.image_url, row.thumbnail_url = hosted.url, hosted.thumbnail_url
        row.published_at = timezone.now()
        CatalogImage.objects.filter(pk=row.pk).update(
            image_host=row.image_host,
            hosted_key=row.hosted_key,
            image_url=row.image_url,
            thumbnail_url=row.thumbnail_url,
            published_at=row.published_at,
        )


def _unstage_published(rows: list[CatalogImage]) -> None:
    """Only now, with the host's copy recorded on the row, remove the staged one."""
    for row in rows:
        if row.is_published and row.staged_file:
            row.staged_file.delete(save=False)
            CatalogImage.objects.filter(pk=row.pk).update(staged_file="")


def _original_bytes(row: CatalogImage) -> bytes:
    """The staged upload while there is one, else the host's copy."""
    if row.staged_file:
        with row.staged_file.open("rb") as handle:
            return handle.read()
    if row.hosted_key:
        return get_image_host(row.image_host).read(row.hosted_key)
    raise OSError("neither a staged upload nor a hosted copy exists")


def _embed_rows(
    rows: list[CatalogImage],
    options: EmbeddingOptions,
    report: IndexReport,
    originals: dict[int, bytes],
) -> dict[int, np.ndarray]:
    """Embed `rows`, caching each embedding on its row; the bytes read go into `originals`."""
    # updated_at marks when processing started: rows stuck here are requeued later.
    CatalogImage.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Status.PROCESSING, failure_reason="", updated_at=timezone.now()
    )
    decoded: dict[int, DecodedImage] = {}
    for row in rows:
        try:
            originals[row.pk] = _original_bytes(row)
            decoded[row.pk] = decode_upload(originals[row.pk])
        except ImageRejected as exc:
            report.failed.update(_mark_failed([row.pk], f"{exc.code}: {exc.detail}"))
        except (OSError, ValueError) as exc:
            reason = f"The stored file could not be read: {exc}"
            report.failed.update(_mark_failed([row.pk], reason))
    if not decoded:
        return {}
    try:
        encoder = get_encoder(options)
    except EmbeddingWeightsUnavailable as exc:
        report.failed.update(_mark_failed(list(decoded), str(exc)))
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
    _mark_failed(image_ids, reason)


def _mark_failed(image_ids: Sequence[int], reason: str) -> dict[int, str]:
    """Record `reason` on the rows; returns {id: reason} for the report."""
    CatalogImage.objects.filter(pk__in=image_ids).exclude(status=Status.INDEXED).update(
        status=Status.FAILED, failure_reason=reason[:2000], updated_at=timezone.now()
    )
    logger.warning("Indexing failed for images %s: %s", list(image_ids), reason)
    return dict.fromkeys(image_ids, reason)


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
    return VectorRecord(
        id=row.vector_id,
        vector=vector,
        metadata={
            "catalog_id": row.pk,
            "title": str(row),
            "image_url": row.image_url,
            "tags": list(row.tags),
            "model": model_id,
        },
    )


def images_requeue_stuck(*, older_than: timedelta) -> int:
    """Queue again images left pending or processing too long (a lost task, a dead worker)."""
    stuck = CatalogImage.objects.filter(
        status__in=[Status.PENDING, Status.PROCESSING], updated_at__lt=timezone.now() - older_than
    )
    ids = list(stuck.values_list("pk", flat=True))
    stuck.update(updated_at=timezone.now())  # not requeued again before the next threshold
    enqueue_indexing(ids)
    return len(ids)


def hosted_image_remove(*, host_name: str, key: str) -> None:
    get_image_host(host_name).delete(key)


def vectors_remove(*, vector_ids: Sequence[str]) -> None:
    get_vector_store().delete(list(vector_ids))
