"""The one place that sends Celery tasks: every write that starts work in a worker comes
through here, once its transaction commits.

`catalog.tasks` is imported inside the functions, never at the top: the tasks call the
pipeline and the services, which call these functions, and a module-level import would
close that circle. Nothing else in catalog imports the tasks (tests/catalog/
test_import_direction.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.models import CatalogImage

Status = CatalogImage.Status


def after_commit(func: Callable[..., object], *args: object) -> None:
    """Call func(*args) once the current transaction commits.

    robust: if it fails (the broker is down, say), the error is logged and the write that
    was committed stands; the outbox sweep (catalog.pipeline.recovery) sends what was not
    queued.
    """

    def call() -> None:  # a real function: Django's error log needs a __qualname__
        func(*args)

    transaction.on_commit(call, robust=True)


def enqueue_indexing(image_ids: Sequence[int]) -> None:
    """Queue indexing in batches after the current transaction commits.

    If the broker is down the upload still succeeds: the row stays pending without
    `queued_at`, and the outbox sweep (catalog.pipeline.recovery) sends it once the broker
    is back.
    """
    batch_size = settings.INDEX_BATCH_SIZE
    for start in range(0, len(image_ids), batch_size):
        after_commit(_send_indexing, list(image_ids[start : start + batch_size]))


def _send_indexing(image_ids: list[int]) -> None:
    """Hand one batch to the broker; pending rows record that it got there."""
    from catalog import tasks

    pending = CatalogImage.objects.filter(pk__in=image_ids, status=Status.PENDING)
    try:
        tasks.index_images.delay(image_ids)
    except Exception:
        pending.update(queued_at=None)  # left for the outbox sweep
        raise
    pending.update(queued_at=timezone.now())


def enqueue_unpublishing(image_ids: Sequence[int]) -> None:
    """Queue `images_unpublish` in batches after the current transaction commits; what the
    broker never gets, the sweep (catalog.pipeline.recovery.images_unpublish_left) sends later."""
    from catalog import tasks

    batch_size = settings.INDEX_BATCH_SIZE
    for start in range(0, len(image_ids), batch_size):
        after_commit(tasks.unpublish_images.delay, list(image_ids[start : start + batch_size]))


def enqueue_index_removal(vector_ids: Sequence[str]) -> None:
    """Queue the removal of `vector_ids` from the vector store after commit."""
    from catalog import tasks

    after_commit(tasks.remove_from_index.delay, list(vector_ids))


def enqueue_hosted_image_removal(host_name: str, key: str) -> None:
    """Queue the removal of a hosted original and its thumbnail after commit."""
    from catalog import tasks

    after_commit(tasks.remove_hosted_image.delay, host_name, key)


def enqueue_reindex_job(job_id: int) -> None:
    """Queue a batch of reindex job `job_id` after commit."""
    from catalog import tasks

    after_commit(tasks.run_reindex_job.delay, job_id)


def enqueue_bulk_upload_job(job_id: int) -> None:
    """Queue (or resume) bulk upload job `job_id` after commit."""
    from catalog import tasks

    after_commit(tasks.run_bulk_upload_job.delay, job_id)


def enqueue_sync_run(run_id: int) -> None:
    """Queue catalog sync run `run_id` after commit."""
    from catalog import tasks

    after_commit(tasks.sync_catalog_run.delay, run_id)
