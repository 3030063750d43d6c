"""Background reindexing jobs: start, run batch by batch, cancel, resume when stalled."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from catalog import services
from catalog.enqueue import enqueue_reindex_job
from catalog.models import CatalogImage, ReindexJob
from catalog.pipeline.indexing import images_index, images_mark_failed
from search.embedding import EmbeddingOptions, model_id_for

Scope, State = ReindexJob.Scope, ReindexJob.State


def _images_in_scope(job: ReindexJob, *, retrying: bool = False) -> QuerySet[CatalogImage]:
    """`retrying`: a "failed" job's batch, which it set pending for another attempt."""
    if job.scope == Scope.SELECTED:
        return CatalogImage.objects.filter(pk__in=job.image_ids)
    images = CatalogImage.objects.filter(is_active=True)
    if job.scope == Scope.STALE:
        return images.filter(Q(embedding__isnull=True) | ~Q(embedding_model=job.model_id))
    if job.scope == Scope.FAILED:
        Status = CatalogImage.Status
        statuses = (
            [Status.FAILED, Status.PENDING, Status.PROCESSING] if retrying else [Status.FAILED]
        )
        return images.filter(status__in=statuses)
    return images


def _next_batch(job: ReindexJob) -> list[int]:
    """The batch after the cursor. A retried batch of a "failed" job finds its images
    already set pending by the first run, so they still count as in scope."""
    return list(
        _images_in_scope(job, retrying=True)
        .filter(pk__gt=job.cursor)
        .order_by("pk")
        .values_list("pk", flat=True)[: settings.INDEX_BATCH_SIZE]
    )


def reindex_job_start(
    *, scope: str, image_ids: Iterable[int] = (), created_by: str = ""
) -> ReindexJob:
    """Create a job for the current model and queue its first batch after commit.

    "all" re-upserts every active image, running the model only where the cached
    embedding is missing or from other weights; "stale" does just those.
    """
    job = ReindexJob(
        scope=scope,
        model_id=model_id_for(EmbeddingOptions.from_settings()),
        image_ids=sorted(set(image_ids)),
        created_by=created_by,
    )
    job.total = _images_in_scope(job).count()
    job.save()
    enqueue_reindex_job(job.pk)
    return job


def reindex_job_run_batch(*, job_id: int) -> bool:
    """Index the job's next batch and record it; True when another batch should follow.

    Progress is committed with a conditional update on the cursor, so a batch redone
    after a worker died, or run twice by two deliveries, is counted once, and only the
    run that recorded it goes on to the next batch.
    """
    job = ReindexJob.objects.filter(pk=job_id).first()
    if job is None or job.is_finished:
        return False
    if job.cancel_requested:
        _finish(job, State.CANCELLED)
        return False
    if job.state == State.QUEUED:
        ReindexJob.objects.filter(pk=job.pk, state=State.QUEUED).update(
            state=State.RUNNING, started_at=timezone.now()
        )
    batch = _next_batch(job)
    if not batch:
        _finish(job, State.DONE)
        return False
    if job.scope == Scope.FAILED:
        services.images_retry(
            images=CatalogImage.objects.filter(pk__in=batch).only("pk"), enqueue=False
        )
    report = images_index(image_ids=batch)
    return _record(job, batch, failed=len(report.failed))


def reindex_job_skip_batch(*, job_id: int, reason: str) -> bool:
    """Record the job's next batch as failed, when its task has given up on it, so that
    the job moves on instead of being resumed, and failing, for ever. True when another
    batch should follow."""
    job = ReindexJob.objects.filter(pk=job_id).first()
    if job is None or job.is_finished:
        return False
    batch = _next_batch(job)
    if not batch:
        _finish(job, State.DONE)
        return False
    images_mark_failed(image_ids=batch, reason=reason)
    return _record(job, batch, failed=len(batch))


def _record(job: ReindexJob, batch: list[int], *, failed: int) -> bool:
    recorded = ReindexJob.objects.filter(pk=job.pk, cursor=job.cursor).update(
        cursor=batch[-1],
        done=F("done") + len(batch) - failed,
        failed=F("failed") + failed,
        updated_at=timezone.now(),
    )
    return bool(recorded)


def _finish(job: ReindexJob, state: str) -> None:
    ReindexJob.objects.filter(pk=job.pk).exclude(state__in=[State.DONE, State.CANCELLED]).update(
        state=state, finished_at=timezone.now(), updated_at=timezone.now()
    )


def reindex_job_cancel(*, job: ReindexJob) -> None:
    """Stop after the batch in progress; a job that has not started stops at once."""
    ReindexJob.objects.filter(pk=job.pk).update(cancel_requested=True, updated_at=timezone.now())
    if job.state == State.QUEUED:
        _finish(job, State.CANCELLED)


def reindex_jobs_resume_stalled(*, older_than: timedelta) -> list[int]:
    """Queue again jobs with no progress for `older_than` (their worker died, say)."""
    stalled = ReindexJob.objects.filter(
        state__in=[State.QUEUED, State.RUNNING], updated_at__lt=timezone.now() - older_than
    )
    ids = list(stalled.values_list("pk", flat=True))
    stalled.update(updated_at=timezone.now())
    for job_id in ids:
        enqueue_reindex_job(job_id)
    return ids


@dataclass(frozen=True)
class JobProgress:
    processed: int
    total: int
    percent: float
    rate: float | None  # images per second
    seconds_left: float | None


def reindex_job_progress(job: ReindexJob) -> JobProgress:
    processed = job.done + job.failed
    percent = 100.0 if job.total == 0 else min(100.0, 100.0 * processed / job.total)
    rate = seconds_left = None
    if job.started_at and processed:
        elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds()
        rate = processed / max(elapsed, 1e-3)
        if not job.is_finished:
            seconds_left = max(0, job.total - processed) / rate
    return JobProgress(processed, job.total, round(percent, 1), rate, seconds_left)
