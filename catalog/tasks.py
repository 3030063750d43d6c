"""Celery tasks: thin doors to catalog.pipeline and catalog.services. They take ids and are
safe to run twice. They stay here, so their names (catalog.tasks.<name>) never change."""

from __future__ import annotations

import logging
import random

from celery import shared_task

from catalog import services
from catalog.hosting import ImageHostError
from catalog.pipeline import indexing
from catalog.pipeline.periodic import periodic_task_record_run
from search.vectorstores import VectorStoreError

logger = logging.getLogger(__name__)
MAX_RETRIES = 5


def _outage_reason(exc: Exception) -> str:
    part = "vector store" if isinstance(exc, VectorStoreError) else "image host"
    return (
        f"The {part} failed: {exc}. It is retried automatically; "
        "or retry now with manage.py reindex --failed."
    )


def _backoff(retries: int) -> float:
    """Exponential backoff with full jitter: up to 2, 4, 8, ... seconds, capped at 5 min."""
    return random.uniform(0, min(300, 2 ** (retries + 1)))


@shared_task(bind=True, max_retries=MAX_RETRIES)
def index_images(self, image_ids: list[int]) -> dict:
    try:
        report = indexing.images_index(image_ids=image_ids)
    except (VectorStoreError, ImageHostError) as exc:
        # Transient: the staged upload and the cached embedding stay, nothing is lost.
        if self.request.retries >= self.max_retries:
            indexing.images_mark_failed(image_ids=image_ids, reason=_outage_reason(exc))
            raise
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    return {"indexed": report.indexed, "failed": report.failed, "removed": report.removed}


@shared_task(bind=True, max_retries=MAX_RETRIES)
def remove_from_index(self, vector_ids: list[str]) -> None:
    try:
        services.vectors_remove(vector_ids=vector_ids)
    except VectorStoreError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=MAX_RETRIES)
def remove_hosted_image(self, host_name: str, key: str) -> None:
    try:
        services.hosted_image_remove(host_name=host_name, key=key)
    except ImageHostError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=MAX_RETRIES)
def unpublish_images(self, image_ids: list[int]) -> None:
    """Take deactivated images off the image host, keeping their originals privately;
    after the last retry the sweep (requeue_stuck) queues them again."""
    try:
        services.images_unpublish(image_ids=image_ids)
    except (ImageHostError, services.StagingUnavailable) as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=MAX_RETRIES)
def run_reindex_job(self, job_id: int) -> None:
    """One batch of a reindexing job, then the next as a new task (see catalog.pipeline.jobs).

    A job always moves on: a batch that still fails after the last retry (or fails in an
    unexpected way) is recorded as failed, and the next batch is queued.
    """
    from catalog.pipeline import jobs

    try:
        more = jobs.reindex_job_run_batch(job_id=job_id)
    except (VectorStoreError, ImageHostError) as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        more = jobs.reindex_job_skip_batch(job_id=job_id, reason=_outage_reason(exc))
    except Exception as exc:
        logger.exception("Reindex job %s: a batch failed; recorded as failed.", job_id)
        more = jobs.reindex_job_skip_batch(
            job_id=job_id, reason=f"Indexing failed: {type(exc).__name__}: {exc}"
        )
    if more:
        run_reindex_job.delay(job_id)


@shared_task(bind=True, max_retries=MAX_RETRIES)
def run_bulk_upload_job(self, job_id: int) -> None:
    """Import an admin bulk upload's staged files (catalog.pipeline.bulk_uploads); safe to
    run twice.

    When the staging storage fails, the job waits at the picture it was on: retried here
    with backoff, then resumed by the stalled-job sweep (requeue_stuck) once it is back.
    """
    from catalog.pipeline import bulk_uploads

    try:
        bulk_uploads.bulk_upload_run(job_id=job_id)
    except (services.StagingUnavailable, OSError) as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        logger.error(
            "Bulk upload %s is waiting for the staging storage (%s); the stalled-job sweep "
            "resumes it.",
            job_id,
            exc,
        )


@shared_task
def reconcile_index() -> None:
    """Periodic (celery beat): repair differences between the database and the store."""
    from catalog.pipeline.index_maintenance import index_reconcile

    periodic_task_record_run(name=reconcile_index.name)
    index_reconcile(fix=True)


@shared_task
def requeue_stuck() -> None:
    """Periodic (celery beat): the whole recovery sweep, not only stuck images (the name
    stays: beat's schedule and messages already queued use it). It requeues stuck images,
    resumes stalled reindex and bulk upload jobs, unpublishes images left published when
    deactivated, sends images that never reached the broker and retries transient failures
    (catalog.pipeline.recovery.catalog_sweep)."""
    from datetime import timedelta

    from django.conf import settings

    from catalog.pipeline import recovery

    periodic_task_record_run(name=requeue_stuck.name)
    recovery.catalog_sweep(older_than=timedelta(minutes=settings.STUCK_AFTER_MINUTES))


@shared_task
def send_unqueued() -> None:
    """Periodic (celery beat, every OUTBOX_SWEEP_SECONDS): send pending images whose
    task never reached the broker, soon after it is back."""
    from catalog.pipeline import recovery

    periodic_task_record_run(name=send_unqueued.name)
    recovery.images_send_unqueued()


@shared_task
def compact_vector_store() -> None:
    """Periodic (celery beat, every LOCAL_STORE_COMPACT_EVERY_MINUTES, with the local store
    and LOCAL_STORE_INDEX not exact): merge recent writes into the approximate index, or
    build it (what manage.py vectorstore_compact does now)."""
    from catalog.pipeline.index_maintenance import index_compact

    periodic_task_record_run(name=compact_vector_store.name)
    logger.info("vector store compaction: %s", index_compact())


# A run held by a live worker (a redelivered message, or a second "Sync now") waits this
# long between looks: past catalog.pipeline.feed_syncs.STALE_AFTER, it is taken over.
SYNC_BUSY_RETRY_SECONDS = 90


@shared_task(bind=True, max_retries=3)
def sync_catalog_run(self, run_id: int) -> str:
    """Sync one feed (a CatalogSyncRun); safe to run twice: a sync is idempotent, and a run
    another live worker holds is left to it."""
    from catalog.pipeline import feed_syncs

    executed = feed_syncs.sync_run_execute(run_id=run_id)
    if executed == feed_syncs.Executed.BUSY and self.request.retries < self.max_retries:
        raise self.retry(countdown=SYNC_BUSY_RETRY_SECONDS)
    return executed


@shared_task
def sync_catalog_sources() -> None:
    """Periodic (celery beat, every SYNC_EVERY_MINUTES): a sync run of every feed of
    SYNC_SOURCES that has none under way."""
    from catalog.pipeline import feed_syncs

    periodic_task_record_run(name=sync_catalog_sources.name)
    feed_syncs.sync_runs_request_scheduled()
