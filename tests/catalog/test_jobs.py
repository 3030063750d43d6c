"""Reindexing jobs move on whatever their batches meet."""

import pytest

from catalog import jobs, services
from catalog.models import CatalogImage, ReindexJob
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
