"""Reindexing jobs move on whatever their batches meet."""

from contextlib import contextmanager

import pytest
from django.db import connection

from catalog import services
from catalog.models import CatalogImage, ReindexJob
from catalog.pipeline import jobs
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_retries(eager_celery):
    """Eager tasks whose retries run at once (propagating errors would stop the first)."""
    eager_celery.conf.task_eager_propagates = False
    yield eager_celery
    eager_celery.conf.task_eager_propagates = True


def test_a_batch_that_fails_every_retry_is_recorded_failed_and_the_job_moves_on(
    eager_retries, settings, tmp_path, django_capture_on_commit_callbacks
):
    names = ("coffee.png", "chelsea.png", "rocket.jpg")
    for name in names:
        services.image_create(file=photo_file(name), enqueue=False)
    settings.INDEX_BATCH_SIZE = 2
    (tmp_path / "not-a-folder").write_text("")
    settings.MEDIA_ROOT = tmp_path / "not-a-folder" / "media"  # the host fails every write

    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.reindex_job_start(scope="all")

    job.refresh_from_db()
    assert (job.state, job.done, job.failed) == (ReindexJob.State.DONE, 0, len(names))
    for image in CatalogImage.objects.all():
        assert (image.status, image.failure_kind) == ("failed", "transient")
        assert "image host failed" in image.failure_reason


def test_a_failed_images_job_that_gives_up_records_the_batch_it_was_retrying(
    eager_retries, settings, tmp_path, django_capture_on_commit_callbacks
):
    image, _ = services.image_create(file=photo_file(), enqueue=False)
    CatalogImage.objects.filter(pk=image.pk).update(status="failed", failure_kind="transient")
    (tmp_path / "not-a-folder").write_text("")
    settings.MEDIA_ROOT = tmp_path / "not-a-folder" / "media"

    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.reindex_job_start(scope="failed")

    job.refresh_from_db()
    assert (job.state, job.failed, job.cursor) == (ReindexJob.State.DONE, 1, image.pk)


# --- Batches, progress, and a batch delivered twice ------------------------------------------

NAMES = ["coffee.png", "rocket.jpg", "chelsea.png"]


@pytest.fixture
def indexed():
    images = [services.image_create(file=photo_file(name))[0] for name in NAMES]
    images_index(image_ids=[image.pk for image in images])
    return list(CatalogImage.objects.order_by("pk"))


def run_to_the_end(job: ReindexJob) -> ReindexJob:
    while jobs.reindex_job_run_batch(job_id=job.pk):
        pass
    job.refresh_from_db()
    return job


def test_a_stale_job_reembeds_images_from_other_weights_in_batches(indexed, settings):
    settings.INDEX_BATCH_SIZE = 2
    settings.EMBEDDING_SEED = 1  # new weights: every image is stale now
    job = jobs.reindex_job_start(scope="stale")
    assert job.total == 3
    job = run_to_the_end(job)
    assert (job.state, job.done, job.failed) == ("done", 3, 0)
    assert set(CatalogImage.objects.values_list("embedding_model", flat=True)) == {
        "resnet50/random-seed1"
    }
    progress = jobs.reindex_job_progress(job)
    assert progress.percent == 100.0 and progress.rate > 0


def test_a_job_counts_images_that_fail(indexed, settings):
    settings.EMBEDDING_SEED = 1
    (settings.MEDIA_ROOT / indexed[0].hosted_key).write_bytes(b"broken")  # the only copy left
    job = run_to_the_end(jobs.reindex_job_start(scope="all"))
    assert (job.done, job.failed) == (2, 1)


def test_a_batch_delivered_twice_at_once_is_counted_once_and_followed_once(indexed, settings):
    settings.INDEX_BATCH_SIZE = 2
    job = jobs.reindex_job_start(scope="all")
    second_delivery = []

    def the_second_delivery_records_the_batch_first():
        second_delivery.append(jobs.reindex_job_run_batch(job_id=job.pk))

    # The first delivery has read the job and indexed the batch when the second one,
    # which read the same cursor, runs the same batch and records it.
    with before_the_first_cursor_update(the_second_delivery_records_the_batch_first):
        first_goes_on = jobs.reindex_job_run_batch(job_id=job.pk)

    assert second_delivery == [True] and first_goes_on is False  # one of them goes on
    job.refresh_from_db()
    assert (job.done, job.failed, job.cursor) == (2, 0, indexed[1].pk)
    job = run_to_the_end(job)
    assert (job.state, job.done, job.failed) == ("done", 3, 0)


@contextmanager
def before_the_first_cursor_update(run):
    """Run `run()` on the same connection just before the first write of a job's cursor:
    the code under test runs unchanged, only the order of two real writes is chosen."""
    fired = []

    def wrapper(execute, sql, params, many, context):
        writes = sql.split("WHERE")[0]
        if not fired and writes.startswith('UPDATE "catalog_reindexjob"') and '"cursor"' in writes:
            fired.append(sql)
            run()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield
    assert fired, "no job recorded a batch"
