"""Automatic recovery: send what never reached the broker, retry transient failures.

`catalog_sweep` runs them with the stuck-work sweep, from celery beat (catalog.tasks) and
from `manage.py requeue_stuck`; beat also sends unqueued images every minute on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from catalog.enqueue import enqueue_indexing, enqueue_unpublishing
from catalog.models import CatalogImage
from catalog.pipeline import bulk_uploads, jobs

Status, Kind = CatalogImage.Status, CatalogImage.FailureKind


def _send_grace() -> timedelta:
    # Longer than a send can take (a timeout, a retry, another timeout): a younger row
    # without queued_at may still be on its way to the broker.
    return timedelta(seconds=4 * settings.BROKER_TIMEOUT_SECONDS + 5)


def images_send_unqueued(*, limit: int = 1000) -> list[int]:
    """Send again pending images whose indexing task never reached the broker.

    Rows are claimed with a conditional update before they are sent, so two sweeps never
    send the same one; a send that fails releases its rows for the next sweep.
    """
    cutoff = timezone.now() - _send_grace()
    unsent = CatalogImage.objects.filter(
        status=Status.PENDING, queued_at__isnull=True, updated_at__lt=cutoff
    )
    ids = list(unsent.order_by("pk").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    claim = timezone.now()
    unsent.filter(pk__in=ids).update(queued_at=claim)
    claimed = list(
        CatalogImage.objects.filter(pk__in=ids, queued_at=claim)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    enqueue_indexing(claimed)
    return claimed


def images_retry_failed() -> list[int]:
    """Queue again images whose failure was transient, FAILED_RETRY_LIMIT times at most,
    FAILED_RETRY_AFTER_MINUTES after failing, then twice as long after each retry."""
    now = timezone.now()
    base = settings.FAILED_RETRY_AFTER_MINUTES
    due = Q(pk__in=[])
    for retries in range(settings.FAILED_RETRY_LIMIT):
        waited = now - timedelta(minutes=base * 2**retries)
        due |= Q(auto_retries=retries, updated_at__lt=waited)
    failed = CatalogImage.objects.filter(due, status=Status.FAILED, failure_kind=Kind.TRANSIENT)
    ids = list(failed.order_by("pk").values_list("pk", flat=True))
    if not ids:
        return []
    # Conditional on the row still being a due failure: a concurrent sweep counts it once.
    failed.filter(pk__in=ids).update(
        status=Status.PENDING,
        failure_reason="",
        auto_retries=F("auto_retries") + 1,
        queued_at=None,
        updated_at=now,
    )
    retried = list(
        CatalogImage.objects.filter(pk__in=ids, status=Status.PENDING, updated_at=now)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    enqueue_indexing(retried)
    return retried


@dataclass(frozen=True)
class SweepReport:
    requeued: int  # images pending or processing for too long
    resumed_jobs: list[int]
    resumed_uploads: list[int]  # bulk upload jobs
    unpublished: list[int]  # inactive images still published, queued for unpublishing
    sent: list[int]  # pending images that never reached the broker
    retried: list[int]  # transient failures queued again


def images_requeue_stuck(*, older_than: timedelta) -> int:
    """Queue again images left pending or processing too long (a lost task, a dead worker)."""
    stuck = CatalogImage.objects.filter(
        status__in=[Status.PENDING, Status.PROCESSING], updated_at__lt=timezone.now() - older_than
    )
    ids = list(stuck.values_list("pk", flat=True))
    stuck.update(updated_at=timezone.now())  # not requeued again before the next threshold
    enqueue_indexing(ids)
    return len(ids)


def images_unpublish_left(*, older_than: timedelta) -> list[int]:
    """Queue unpublishing for inactive images still published `older_than` after their
    last change: their task was lost, or they were deactivated before unpublishing was."""
    left = CatalogImage.objects.filter(
        is_active=False, published_at__isnull=False, updated_at__lt=timezone.now() - older_than
    )
    ids = list(left.order_by("pk").values_list("pk", flat=True))
    enqueue_unpublishing(ids)
    return ids


def catalog_sweep(*, older_than: timedelta) -> SweepReport:
    """Everything that gets stalled work moving again; beat runs it every 5 minutes, and
    `manage.py requeue_stuck` (for cron) runs the same."""
    return SweepReport(
        requeued=images_requeue_stuck(older_than=older_than),
        resumed_jobs=jobs.reindex_jobs_resume_stalled(older_than=older_than),
        resumed_uploads=bulk_uploads.bulk_uploads_resume_stalled(older_than=older_than),
        unpublished=images_unpublish_left(older_than=older_than),
        sent=images_send_unqueued(),
        retried=images_retry_failed(),
    )
