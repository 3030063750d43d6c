"""Tasks are thin doors to the services: each takes ids from the broker, reads the rows
again, and is safe to run twice; a task whose row is gone by then does nothing."""

import pytest

from catalog import services, tasks
from catalog.models import BulkUploadJob, CatalogImage, PeriodicTaskRun, ReindexJob
from catalog.pipeline import jobs
from catalog.pipeline.indexing import images_index
from search.vectorstores import get_vector_store
from tests.conftest import photo_file

pytestmark = pytest.mark.django_db


def create(name: str = "coffee.png") -> CatalogImage:
    image, created = services.image_create(file=photo_file(name), enqueue=False)
    assert created
    return image


def catalog_state() -> tuple:
    """What a task may change: the rows, the vectors, the hosted files."""
    rows = list(
        CatalogImage.objects.order_by("pk").values_list(
            "pk", "status", "is_active", "embedding_model", "image_host", "hosted_key",
            "published_at", "staged_file",
        )
    )  # fmt: skip
    return rows, get_vector_store().count()


def test_indexing_twice_leaves_the_image_indexed_once():
    image = create()
    tasks.index_images([image.pk])
    after_once = catalog_state()
    tasks.index_images([image.pk])
    assert catalog_state() == after_once
    image.refresh_from_db()
    assert image.status == CatalogImage.Status.INDEXED
    assert get_vector_store().count() == 1


def test_indexing_a_deleted_image_does_nothing():
    image = create()
    CatalogImage.objects.filter(pk=image.pk).delete()
    assert tasks.index_images([image.pk]) == {"indexed": [], "failed": {}, "removed": []}
    assert catalog_state() == ([], 0)


def test_unpublishing_twice_keeps_the_original_once_and_the_host_empty(settings):
    image = create()
    images_index(image_ids=[image.pk])
    CatalogImage.objects.filter(pk=image.pk).update(is_active=False)
    tasks.unpublish_images([image.pk])
    after_once = catalog_state()
    tasks.unpublish_images([image.pk])
    assert catalog_state() == after_once
    image.refresh_from_db()
    assert (image.published_at, image.hosted_key) == (None, "") and image.staged_file


def test_unpublishing_a_deleted_image_does_nothing():
    image = create()
    CatalogImage.objects.filter(pk=image.pk).delete()
    tasks.unpublish_images([image.pk])
    assert catalog_state() == ([], 0)


def test_removing_a_deleted_images_vector_twice_removes_it_once():
    image = create()
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    CatalogImage.objects.filter(pk=image.pk).delete()
    tasks.remove_from_index([image.vector_id])
    tasks.remove_from_index([image.vector_id])
    assert get_vector_store().count() == 0


def test_removing_a_hosted_image_twice_removes_it_once(settings):
    image = create()
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    host_name, key = image.image_host, image.hosted_key
    CatalogImage.objects.filter(pk=image.pk).delete()
    tasks.remove_hosted_image(host_name, key)
    tasks.remove_hosted_image(host_name, key)
    assert not (settings.MEDIA_ROOT / key).exists()


def test_a_reindex_job_delivered_twice_counts_each_image_once(settings):
    for name in ("coffee.png", "chelsea.png"):
        create(name)
    settings.INDEX_BATCH_SIZE = 10
    job = jobs.reindex_job_start(scope="all")
    tasks.run_reindex_job(job.pk)  # the batch, then the next task: nothing left, done
    tasks.run_reindex_job(job.pk)
    tasks.run_reindex_job(job.pk)  # a finished job: nothing happens
    job.refresh_from_db()
    assert (job.state, job.done, job.failed) == (ReindexJob.State.DONE, 2, 0)


def test_jobs_that_were_deleted_do_nothing():
    reindex = ReindexJob.objects.create(scope="all", model_id="m")
    upload = BulkUploadJob.objects.create()
    ReindexJob.objects.all().delete()
    BulkUploadJob.objects.all().delete()
    tasks.run_reindex_job(reindex.pk)
    tasks.run_bulk_upload_job(upload.pk)
    assert not ReindexJob.objects.exists() and not BulkUploadJob.objects.exists()
    assert catalog_state() == ([], 0)


def test_the_periodic_sweeps_run_twice_leave_the_same_state_and_note_their_runs():
    image = create()
    images_index(image_ids=[image.pk])
    for task in (tasks.requeue_stuck, tasks.send_unqueued, tasks.reconcile_index):
        task()
        after_once = catalog_state()
        task()
        assert catalog_state() == after_once
    assert set(PeriodicTaskRun.objects.values_list("name", flat=True)) == {
        tasks.requeue_stuck.name,
        tasks.send_unqueued.name,
        tasks.reconcile_index.name,
    }
