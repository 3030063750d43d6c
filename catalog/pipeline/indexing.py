"""Indexing catalog images: embed (or reuse the cached embedding), publish, upsert, record.

Errors are per image: a picture that cannot be read, published or embedded fails alone,
with its reason, and the rest of its batch is indexed. Only an outage that fails every
image of the batch (the host or the vector store down) raises, for the task to retry.

A worker killed mid-run (the kernel's out-of-memory killer, say) leaves `attempts` raised
on the rows it was working on, and the broker redelivers the task. A batch redelivered
after two kills is indexed one image at a time; an image that kills its worker while
alone is marked failed, as redelivering it again would only kill the next worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from catalog.hosting import HostedImage, ImageHostError, get_image_host
from catalog.models import CatalogImage
from catalog.pipeline.duplicates import images_record_nearest
from catalog.searchable_counts import searchable_counts_changed
from search.decoding import decode_upload
from search.embedding import (
    EmbeddingOptions,
    EmbeddingWeightsUnavailable,
    ImageEncoder,
    get_encoder,
    model_id_for,
)
from search.imaging import DecodedImage, ImageRejected
from search.vectorstores import VectorRecord, get_vector_store

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)
Status, Kind = CatalogImage.Status, CatalogImage.FailureKind

KILLS_BEFORE_SPLIT = 2  # unfinished runs of a batch before its images go one at a time
# The attempts count of an image being tried by itself: a row found with it again was
# killed alone, so it is the culprit.
TRIED_ALONE_ATTEMPTS = KILLS_BEFORE_SPLIT + 1


@dataclass
class IndexReport:
    indexed: list[int] = field(default_factory=list)
    embedded: list[int] = field(default_factory=list)  # ran the model for these
    failed: dict[int, str] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)  # inactive or deleted meanwhile


@dataclass(frozen=True)
class _Run:
    options: EmbeddingOptions
    model_id: str


def images_index(*, image_ids: Sequence[int]) -> IndexReport:
    """Embed (or reuse cached embeddings), publish, upsert vectors, and record the outcome.

    Idempotent: an image already indexed with the current model is upserted again from
    its cached embedding (one vector per id) and its row is left as it was. Images
    embedded now, or never checked, get their nearest other image recorded
    (catalog.pipeline.duplicates). Inactive images have their vector removed instead. Raises
    VectorStoreError or ImageHostError when the store or host fails for the whole batch,
    leaving computed embeddings cached on the rows for the retry.
    """
    report = IndexReport()
    options = EmbeddingOptions.from_settings()
    run = _Run(options, model_id_for(options))
    rows = list(CatalogImage.objects.filter(pk__in=image_ids).order_by("pk"))

    inactive = [row for row in rows if not row.is_active]
    if inactive:
        get_vector_store().delete([row.vector_id for row in inactive])
        report.removed += [row.pk for row in inactive]

    active = [row for row in rows if row.is_active]
    killed_alone = [
        row for row in active if row.attempts >= TRIED_ALONE_ATTEMPTS and _needs_work(row, run)
    ]
    if killed_alone:
        reason = _killed_reason()
        for row in killed_alone:
            report.failed.update(_mark_failed([row.pk], reason, attempts=KILLS_BEFORE_SPLIT))
    active = [row for row in active if row not in killed_alone]
    work = [row for row in active if _needs_work(row, run)]
    if any(row.attempts >= KILLS_BEFORE_SPLIT for row in work):
        # Twice killed: one image at a time, so that the next kill names its culprit.
        logger.warning("Indexing images %s one at a time after killed runs.", [r.pk for r in work])
        finished = [row for row in active if row not in work]
        _index_group(finished, run, report, alone=False)
        for row in work:
            _index_group([row], run, report, alone=True)
    else:
        _index_group(active, run, report, alone=False)
    return report


def _needs_work(row: CatalogImage, run: _Run) -> bool:
    return not _has_current_embedding(row, run) or not row.is_published


def _has_current_embedding(row: CatalogImage, run: _Run) -> bool:
    return row.embedding is not None and row.embedding_model == run.model_id


def _killed_reason() -> str:
    return (
        "The worker was killed while indexing this image, twice in its batch and again "
        "alone: it may need more memory than WORKER_MAX_MEMORY_MB "
        f"({settings.WORKER_MAX_MEMORY_MB}) or the container allows. Give the worker more "
        "memory, or upload a smaller copy, then retry."
    )


def _index_group(rows: list[CatalogImage], run: _Run, report: IndexReport, *, alone: bool):
    if not rows:
        return
    work = [row for row in rows if _needs_work(row, run)]
    # Counted before the work and uncounted after it, so a count left raised means that
    # a worker died here. updated_at marks when processing started (see requeue_stuck).
    CatalogImage.objects.filter(pk__in=[row.pk for row in work]).update(
        status=Status.PROCESSING,
        failure_reason="",
        attempts=TRIED_ALONE_ATTEMPTS if alone else F("attempts") + 1,
        updated_at=timezone.now(),
    )
    if any(row.status == Status.INDEXED for row in work):  # reindexed: unsearchable meanwhile
        searchable_counts_changed()
    try:
        _index_rows(rows, run, report)
    except Exception:
        for row in work:  # an error is not a kill: the task's retry starts afresh
            CatalogImage.objects.filter(pk=row.pk).update(attempts=row.attempts)
        raise


def _index_rows(rows: list[CatalogImage], run: _Run, report: IndexReport) -> None:
    vectors: dict[int, np.ndarray] = {
        row.pk: row.embedding_vector for row in rows if _has_current_embedding(row, run)
    }
    to_embed = [row for row in rows if row.pk not in vectors]
    originals: dict[int, bytes] = {}  # read once, for both embedding and publishing
    previews: dict[int, Image.Image] = {}  # decoded once, for the model and the thumbnail
    publishing = _Publishing(originals, previews, report)
    by_pk = {row.pk: row for row in rows}
    if to_embed:
        # Each group of rows is published as soon as its vectors are known, while the
        # model embeds the next group.
        vectors.update(
            _embed_rows(
                to_embed,
                run.options,
                report,
                originals,
                previews,
                lambda pks: publishing.publish([by_pk[pk] for pk in pks]),
            )
        )

    ready = [row for row in rows if row.pk in vectors]
    publishing.publish(ready)  # those with a cached embedding; the rest are done already
    dropped = publishing.settle()
    ready = [row for row in ready if row.pk not in dropped]
    if not ready:
        return
    get_vector_store().upsert(vector_record(row, vectors[row.pk], run.model_id) for row in ready)
    ready_ids = [row.pk for row in ready]
    now = timezone.now()
    unindexed = CatalogImage.objects.filter(pk__in=ready_ids).exclude(status=Status.INDEXED)
    newly_indexed = unindexed.update(
        status=Status.INDEXED,
        failure_reason="",
        failure_kind="",
        attempts=0,
        auto_retries=0,
        indexed_at=now,
        updated_at=now,
    )
    if newly_indexed:
        searchable_counts_changed()
    report.indexed += ready_ids
    _remove_vectors_of_rows_gone_meanwhile(ready_ids, report)
    _unstage_published(ready)
    # Last, as the image is indexed whatever happens here: a store that fails this query
    # raises for the task's retry, which finds the rows still unchecked.
    unchecked = [
        row.pk
        for row in ready
        if (row.duplicate_checked_at is None or row.pk in report.embedded)
        and row.pk not in report.removed
    ]
    images_record_nearest(vectors={pk: vectors[pk] for pk in unchecked}, model_id=run.model_id)


class _Publishing:
    """Publishes rows to the image host, a group at a time, as indexing goes; `settle`
    then says which rows not to index, or raises when the host failed every row."""

    def __init__(
        self, originals: dict[int, bytes], previews: dict[int, Image.Image], report: IndexReport
    ):
        self.originals, self.previews, self.report = originals, previews, report
        self.tried: set[int] = set()
        self.errors: dict[int, Exception] = {}
        self.dropped: set[int] = set()

    def publish(self, rows: list[CatalogImage]) -> None:
        """Publish the unpublished rows not tried yet; their records are written in one
        transaction (one commit for the group), after the host has their files."""
        rows = [row for row in rows if not row.is_published and row.pk not in self.tried]
        if not rows:
            return
        self.tried.update(row.pk for row in rows)
        host = get_image_host()
        hosted: dict[int, HostedImage] = {}
        for row in rows:
            try:
                hosted[row.pk] = host.publish(
                    image_id=row.pk,
                    sha256=row.sha256,
                    data=self.originals.get(row.pk) or original_bytes(row),
                    extension=row.format,
                    preview=self.previews.get(row.pk),
                )
            except (ImageHostError, OSError) as exc:
                self.errors[row.pk] = exc
        with transaction.atomic():
            deleted_meanwhile = [
                row
                for row in rows
                if row.pk in hosted and not _record_published(row, host.name, hosted[row.pk])
            ]
        for row in deleted_meanwhile:  # nobody else knows of this copy
            _remove_orphaned_copy(host.name, row.hosted_key)
            self.dropped.add(row.pk)
            self.report.removed.append(row.pk)

    def settle(self) -> set[int]:
        """The ids not to index: failed (marked so) or deleted meanwhile. Raises
        ImageHostError when every row tried failed, as when the host is down."""
        if self.errors and len(self.errors) == len(self.tried):
            first = next(iter(self.errors.values()))
            raise first if isinstance(first, ImageHostError) else ImageHostError(str(first))
        for pk, exc in self.errors.items():
            reason = f"The image host could not publish it: {exc}"
            self.report.failed.update(_mark_failed([pk], reason))
            self.dropped.add(pk)
        return self.dropped


def _record_published(row: CatalogImage, host_name: str, hosted: HostedImage) -> bool:
    """Record where the host put `row`'s picture; False when the row is gone meanwhile."""
    row.image_host, row.hosted_key = host_name, hosted.key
    row.image_url, row.thumbnail_url = hosted.url, hosted.thumbnail_url
    row.published_at = timezone.now()
    recorded = CatalogImage.objects.filter(pk=row.pk).update(
        image_host=row.image_host,
        hosted_key=row.hosted_key,
        image_url=row.image_url,
        thumbnail_url=row.thumbnail_url,
        published_at=row.published_at,
    )
    return bool(recorded)


def _remove_orphaned_copy(host_name: str, key: str) -> None:
    from catalog import services
    from catalog.enqueue import enqueue_hosted_image_removal

    try:
        services.hosted_image_remove(host_name=host_name, key=key)
    except ImageHostError:
        logger.warning("Could not remove %s from %s now; queued.", key, host_name, exc_info=True)
        enqueue_hosted_image_removal(host_name, key)


def _unstage_published(rows: list[CatalogImage]) -> None:
    """Only now, with the host's copy recorded on the row, remove the staged one.

    The image is indexed whatever happens here: a staged copy that cannot be removed now
    (object storage unreachable) stays on the row, for the next indexing run to remove.
    """
    removed = []
    for row in rows:
        if row.is_published and row.staged_file:
            name = row.staged_file.name
            try:
                row.staged_file.delete(save=False)
            except Exception:  # each storage has its own errors (OSError, botocore, ...)
                logger.warning("Could not remove staged upload %s now.", name, exc_info=True)
                continue
            removed.append(row.pk)
    if removed:
        CatalogImage.objects.filter(pk__in=removed).update(staged_file="")


def original_bytes(row: CatalogImage) -> bytes:
    """The staged upload while there is one, else the host's copy.

    Raises OSError when the staged copy cannot be read, from a local folder or from object
    storage alike, so that the image fails alone, transiently, and is retried.
    """
    if row.staged_file:
        try:
            with row.staged_file.open("rb") as handle:
                return handle.read()
        except OSError:
            raise
        except Exception as exc:  # an object store's own errors (botocore, ...)
            name = row.staged_file.name
            raise OSError(f"Could not read the staged upload {name}: {exc}") from exc
    if row.hosted_key:
        return get_image_host(row.image_host).read(row.hosted_key)
    raise OSError("neither a staged upload nor a hosted copy exists")


def _embed_rows(
    rows: list[CatalogImage],
    options: EmbeddingOptions,
    report: IndexReport,
    originals: dict[int, bytes],
    previews: dict[int, Image.Image],
    on_embedded: Callable[[list[int]], None] | None = None,
) -> dict[int, np.ndarray]:
    """Embed `rows`, caching each embedding on its row; the bytes read go into `originals`,
    and the decoded pictures of JPEGs into `previews`, for their thumbnails. (Other
    formats may have transparency, which the model's decoder flattens and a thumbnail
    keeps.)

    Three threads share the work, so that the model never waits: one reads and decodes
    the pictures in order, ahead of the model (Pillow lets go of the GIL while it
    decodes); one hands the model a group (the encoder's batch size) at a time; this one,
    the only one that touches the database, marks failures and calls `on_embedded` with
    each group's ids as soon as its vectors are known, while the model embeds the next.
    """
    vectors: dict[int, np.ndarray] = {}
    step = options.effective_batch_size
    decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-decode")
    embedder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-embed")
    try:
        reads = [decoder.submit(_read_and_decode, row, options) for row in rows]
        encoder: ImageEncoder | None = None
        unavailable = ""
        running: tuple[dict[int, DecodedImage], Future] | None = None
        for start in range(0, len(rows), step):
            decoded = _collect_decoded(
                rows[start : start + step], reads[start : start + step], report, originals, previews
            )
            if decoded and encoder is None and not unavailable:
                try:
                    encoder = get_encoder(options)
                except EmbeddingWeightsUnavailable as exc:
                    unavailable = str(exc)
            if decoded and unavailable:
                report.failed.update(_mark_failed(list(decoded), unavailable))
                continue
            if not decoded:
                continue
            images = [item.image for item in decoded.values()]
            started = (decoded, embedder.submit(encoder.embed_batch, images))
            if running:
                _group_embedded(encoder, *running, report, vectors, on_embedded)
            running = started
        if running:
            _group_embedded(encoder, *running, report, vectors, on_embedded)
    finally:
        decoder.shutdown(cancel_futures=True)
        embedder.shutdown(cancel_futures=True)
    if vectors:
        with transaction.atomic():  # one commit for the batch's embeddings
            for pk, vector in vectors.items():
                CatalogImage.objects.filter(pk=pk).update(
                    embedding=vector.astype(np.float32).tobytes(), embedding_model=encoder.model_id
                )
    report.embedded += list(vectors)
    return vectors


def _read_and_decode(row: CatalogImage, options: EmbeddingOptions) -> tuple[bytes, DecodedImage]:
    """On the decoding thread: no database here."""
    data = original_bytes(row)
    return data, decode_upload(data, options=options)


def _collect_decoded(
    rows: list[CatalogImage],
    reads: list[Future],
    report: IndexReport,
    originals: dict[int, bytes],
    previews: dict[int, Image.Image],
) -> dict[int, DecodedImage]:
    """The decoded pictures of `rows`, in order; a picture that could not be read or
    decoded is marked failed, alone."""
    decoded: dict[int, DecodedImage] = {}
    for row, read in zip(rows, reads, strict=True):
        try:
            originals[row.pk], decoded[row.pk] = read.result()
            if decoded[row.pk].format == "JPEG":
                previews[row.pk] = decoded[row.pk].image
        except ImageRejected as exc:
            reason = f"{exc.code}: {exc.detail}"
            report.failed.update(_mark_failed([row.pk], reason, kind=Kind.PERMANENT))
        except (ImageHostError, OSError, ValueError) as exc:
            reason = f"The stored file could not be read: {exc}"
            report.failed.update(_mark_failed([row.pk], reason))
    return decoded


def _group_embedded(
    encoder: ImageEncoder,
    decoded: dict[int, DecodedImage],
    started: Future,
    report: IndexReport,
    vectors: dict[int, np.ndarray],
    on_embedded: Callable[[list[int]], None] | None,
) -> None:
    group = _embed_each(encoder, decoded, report, started)
    vectors.update(group)
    if on_embedded and group:
        on_embedded(list(group))


def _embed_each(
    encoder: ImageEncoder,
    decoded: dict[int, DecodedImage],
    report: IndexReport,
    started: Future | None = None,
) -> dict[int, np.ndarray]:
    """The group in one call (`started`: that call, already running on another thread);
    if it raises, image by image, to fail only the culprit."""
    try:
        if started is not None:
            embeddings = started.result()
        else:
            embeddings = encoder.embed_batch([item.image for item in decoded.values()])
        return dict(zip(decoded, embeddings, strict=True))
    except Exception:
        if len(decoded) > 1:
            logger.warning("Embedding batch %s failed; one at a time.", list(decoded))
    vectors = {}
    for pk, item in decoded.items():
        try:
            vectors[pk] = encoder.embed_batch([item.image])[0]
        except Exception as exc:
            reason = f"The model could not embed it: {type(exc).__name__}: {exc}"
            report.failed.update(_mark_failed([pk], reason))
    return vectors


def images_mark_failed(*, image_ids: Sequence[int], reason: str) -> None:
    """Record a final failure (after retries) so a curator can see it and retry."""
    _mark_failed(image_ids, reason)


def _mark_failed(
    image_ids: Sequence[int], reason: str, *, kind: str = Kind.TRANSIENT, attempts: int = 0
) -> dict[int, str]:
    """Record `reason` on the rows; returns {id: reason} for the report.

    A transient failure (host, store, worker) is retried automatically later; a permanent
    one (the picture itself) waits for a curator.
    """
    CatalogImage.objects.filter(pk__in=image_ids).exclude(status=Status.INDEXED).update(
        status=Status.FAILED,
        failure_reason=reason[:2000],
        failure_kind=kind,
        attempts=attempts,
        updated_at=timezone.now(),
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
            "external_id": row.external_id,
            "link_url": row.link_url,
            # Flat (catalog.item_fields), under a prefix that no field of ours uses.
            **{f"metadata.{key}": value for key, value in row.metadata.items()},
        },
    )
