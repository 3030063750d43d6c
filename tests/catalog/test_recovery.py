"""Automatic recovery: transient failures are retried with a backoff, permanent ones never;
what never reached the broker is sent once, stuck images and stalled jobs start again."""

from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from catalog import services
from catalog.models import CatalogImage, ReindexJob
from catalog.pipeline import jobs
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_file

pytestmark = pytest.mark.django_db
Status = CatalogImage.Status


def create(name="astronaut.png") -> CatalogImage:
    image, created = services.image_create(file=photo_file(name))
    assert created
    return image


# --- Failed images are retried automatically, transient ones only ----------------------------


def fail(image: CatalogImage, kind: str, minutes_ago: float) -> None:
    from datetime import timedelta

    from django.utils import timezone

    CatalogImage.objects.filter(pk=image.pk).update(
        status=Status.FAILED,
        failure_reason="The image host failed.",
        failure_kind=kind,
        updated_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_a_transient_failure_is_retried_after_a_backoff(django_capture_on_commit_callbacks):
    from catalog.pipeline import recovery

    old, recent = create("coffee.png"), create("chelsea.png")
    fail(old, "transient", minutes_ago=6)
    fail(recent, "transient", minutes_ago=1)
    with django_capture_on_commit_callbacks() as callbacks:
        assert recovery.images_retry_failed() == [old.pk]
    assert len(callbacks) == 1
    old.refresh_from_db()
    assert (old.status, old.auto_retries, old.failure_reason) == (Status.PENDING, 1, "")


def test_a_failed_image_is_retried_at_most_failed_retry_limit_times(settings):
    from catalog.pipeline import recovery

    settings.FAILED_RETRY_LIMIT = 3
    image = create()
    for retries in range(3):
        fail(image, "transient", minutes_ago=5 * 2**retries + 1)
        assert recovery.images_retry_failed() == [image.pk]
    fail(image, "transient", minutes_ago=10_000)
    assert recovery.images_retry_failed() == []
    image.refresh_from_db()
    assert image.auto_retries == 3


def test_the_backoff_doubles_between_automatic_retries():
    from catalog.pipeline import recovery

    image = create()
    fail(image, "transient", minutes_ago=6)
    assert recovery.images_retry_failed() == [image.pk]
    fail(image, "transient", minutes_ago=6)  # the second retry waits 10 minutes
    assert recovery.images_retry_failed() == []


def test_a_permanent_failure_is_never_retried_automatically():
    from catalog.pipeline import recovery

    image = create()
    fail(image, "permanent", minutes_ago=10_000)
    assert recovery.images_retry_failed() == []


def test_an_indexed_image_starts_again_with_no_automatic_retries_used():
    from catalog.pipeline import recovery

    image = create()
    fail(image, "transient", minutes_ago=6)
    recovery.images_retry_failed()
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert (image.status, image.auto_retries, image.failure_kind) == (Status.INDEXED, 0, "")


# --- Outage paths: what a sweep claims, requeues and resumes --------------------------------


@contextmanager
def before_the_first(statement: str, table: str, run):
    """Run `run()` on the same connection just before the first `statement` on `table`:
    another sweep, or another delivery of a task, getting there first. The code under test
    runs unchanged; only the order of two real writes is chosen."""
    fired = []

    def wrapper(execute, sql, params, many, context):
        if not fired and sql.startswith(statement) and f'"{table}"' in sql:
            fired.append(sql)
            run()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield
    assert fired, f"no {statement} on {table} ran"


def ago(minutes: float):
    return timezone.now() - timedelta(minutes=minutes)


def test_a_sweep_sends_only_the_unqueued_rows_it_claimed_itself():
    from catalog.pipeline import recovery

    mine, theirs = create("coffee.png"), create("chelsea.png")
    CatalogImage.objects.update(queued_at=None, updated_at=ago(10))  # the broker was down
    their_claim = ago(0.01)

    def another_sweep_claims_theirs():
        CatalogImage.objects.filter(pk=theirs.pk).update(queued_at=their_claim)

    with before_the_first("UPDATE", "catalog_catalogimage", another_sweep_claims_theirs):
        assert recovery.images_send_unqueued() == [mine.pk]
    theirs.refresh_from_db()
    assert theirs.queued_at == their_claim


def test_an_unqueued_row_is_sent_once_its_send_may_have_failed_and_not_before():
    from catalog.pipeline import recovery

    create("coffee.png")  # young: its send may still be on its way
    old = create("chelsea.png")
    CatalogImage.objects.update(queued_at=None)
    CatalogImage.objects.filter(pk=old.pk).update(updated_at=ago(10))
    assert recovery.images_send_unqueued() == [old.pk]
    assert recovery.images_send_unqueued() == []  # claimed: the next sweep leaves it


def stuck(image: CatalogImage, status: str, minutes_ago: float) -> None:
    CatalogImage.objects.filter(pk=image.pk).update(status=status, updated_at=ago(minutes_ago))


def test_images_pending_or_processing_too_long_are_requeued_once_per_threshold(
    django_capture_on_commit_callbacks,
):
    from catalog.pipeline import recovery

    pending, processing, recent, failed = (
        create(name) for name in ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png")
    )
    stuck(pending, Status.PENDING, minutes_ago=60)
    stuck(processing, Status.PROCESSING, minutes_ago=60)
    stuck(recent, Status.PENDING, minutes_ago=1)
    stuck(failed, Status.FAILED, minutes_ago=60)
    with django_capture_on_commit_callbacks() as sent:
        assert recovery.images_requeue_stuck(older_than=timedelta(minutes=30)) == 2
    assert len(sent) == 1  # one batch: the two stuck rows
    assert recovery.images_requeue_stuck(older_than=timedelta(minutes=30)) == 0


def job(state: str, minutes_ago: float) -> ReindexJob:
    created = ReindexJob.objects.create(scope="all", model_id="m", state=state)
    ReindexJob.objects.filter(pk=created.pk).update(updated_at=ago(minutes_ago))
    return created


def test_jobs_with_no_progress_for_too_long_are_resumed_once_per_threshold(
    django_capture_on_commit_callbacks,
):
    State = ReindexJob.State
    queued, running = job(State.QUEUED, 60), job(State.RUNNING, 60)
    job(State.RUNNING, 1), job(State.DONE, 60), job(State.CANCELLED, 60)
    with django_capture_on_commit_callbacks() as sent:
        resumed = jobs.reindex_jobs_resume_stalled(older_than=timedelta(minutes=30))
    assert sorted(resumed) == [queued.pk, running.pk]
    assert len(sent) == 2
    assert jobs.reindex_jobs_resume_stalled(older_than=timedelta(minutes=30)) == []
