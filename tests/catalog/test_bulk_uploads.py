"""Bulk uploads as background jobs: staged by the request, imported by a worker, resumed
where they stopped, never creating anything twice, and their staged files removed after."""

import io
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from catalog import services, tasks
from catalog.models import BulkUploadJob, CatalogImage
from catalog.pipeline import bulk_uploads
from tests.conftest import encode, photo, photo_bytes, photo_file

pytestmark = pytest.mark.django_db
NAMES = ["coffee.png", "rocket.jpg", "chelsea.png", "astronaut.png", "brick.png"]


def zip_of(members: dict[str, bytes]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return archive.getvalue()


def start(*files: ContentFile, tags=("holiday",)) -> BulkUploadJob:
    return bulk_uploads.bulk_upload_start(files=list(files), tags=tags, created_by="curator")


def run(job: BulkUploadJob) -> BulkUploadJob:
    tasks.run_bulk_upload_job(job.pk)
    job.refresh_from_db()
    return job


def counts(job: BulkUploadJob) -> tuple[int, int, int, int, int]:
    return job.total, job.read, job.created, job.duplicates, job.failed


def staged_names(job: BulkUploadJob) -> list[str]:
    return [item["staged"] for item in job.files]


@pytest.fixture
def holiday_zip() -> ContentFile:
    members = {f"photos/{name.split('.')[0]}.jpg": photo_bytes(name) for name in NAMES[:3]}
    members["photos/broken.jpg"] = b"\xff\xd8 not a picture"
    return ContentFile(zip_of(members), name="holiday.zip")


def test_starting_a_job_stages_the_files_and_reads_no_picture(holiday_zip):
    job = start(holiday_zip, ContentFile(photo_bytes("brick.png"), name="brick.jpg"))
    assert job.state == "queued"
    assert [item["name"] for item in job.files] == ["holiday.zip", "brick.jpg"]
    assert all(storages["staging"].exists(name) for name in staged_names(job))
    assert not CatalogImage.objects.exists()


def test_running_the_job_creates_the_images_and_counts_each_outcome(holiday_zip):
    services.image_create(file=photo_file("rocket.jpg"))
    job = run(start(holiday_zip, ContentFile(photo_bytes("brick.png"), name="brick.jpg")))
    assert job.state == "done"
    # 4 members in the zip and 1 picture: 3 new, rocket already there, broken refused.
    assert counts(job) == (5, 5, 3, 1, 1)
    assert CatalogImage.objects.count() == 4
    added = CatalogImage.objects.filter(tags=["holiday"]).values_list("title", flat=True)
    assert sorted(added) == ["brick", "chelsea", "coffee"]
    [failure] = job.failures.all()
    assert failure.name == "holiday.zip:photos/broken.jpg"
    assert "not" in failure.reason.lower() or "cannot" in failure.reason.lower()


def test_running_the_job_twice_creates_nothing_more(holiday_zip):
    job = run(start(holiday_zip))
    before = (CatalogImage.objects.count(), counts(job), job.failures.count())
    job = run(job)
    assert (CatalogImage.objects.count(), counts(job), job.failures.count()) == before


def test_the_staged_files_are_removed_once_the_job_is_done(holiday_zip):
    job = start(holiday_zip)
    staged = staged_names(job)
    job = run(job)
    assert not any(storages["staging"].exists(name) for name in staged)
    assert staged_names(job) == [""] and job.files_removed_at is not None


def test_the_images_created_are_queued_for_indexing(
    holiday_zip, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        job = run(start(holiday_zip))
    assert job.created == 3
    assert len(queued) >= 2  # the job's own task, then the indexing of its images


def test_a_job_stopped_by_a_staging_outage_resumes_where_it_stopped(settings):
    """The worker cannot store the third picture (its staging folder cannot be made): the
    task fails for a retry, and the next run goes on from that picture, with nothing lost
    and nothing created twice."""
    from celery.exceptions import Retry

    pictures = {f"{index}.png": encode(photo(name), "PNG") for index, name in enumerate(NAMES)}
    job = start(ContentFile(zip_of(pictures), name="five.zip"))
    third = services.picture_check(ContentFile(pictures["2.png"], name="2.png")).decoded.sha256
    blocker = settings.STAGING_ROOT / third[:2]  # a file where its folder would go
    settings.STAGING_ROOT.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")

    with pytest.raises(Retry):
        tasks.run_bulk_upload_job.apply(args=[job.pk], throw=True)
    job.refresh_from_db()
    assert job.state == "running" and job.read == 2 and job.attempts == 0
    assert CatalogImage.objects.count() == 2
    assert all(storages["staging"].exists(name) for name in staged_names(job))

    blocker.unlink()
    job = run(job)
    assert counts(job) == (5, 5, 5, 0, 0)
    assert CatalogImage.objects.count() == 5


def test_a_picture_that_killed_its_worker_twice_is_recorded_failed_and_the_job_goes_on(
    holiday_zip,
):
    job = start(holiday_zip)
    # What two workers killed while reading the first picture leave behind.
    BulkUploadJob.objects.filter(pk=job.pk).update(state="running", attempts=2)
    job = run(job)
    assert counts(job) == (4, 4, 2, 0, 2)
    first = job.failures.get(position=0)
    assert first.name == "holiday.zip:photos/coffee.jpg"
    assert "killed" in first.reason and "upload it again" in first.reason


def test_a_stalled_job_is_queued_again_by_the_sweep(
    holiday_zip, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from catalog.pipeline import recovery

    job = start(holiday_zip)  # its task never reached a worker
    BulkUploadJob.objects.filter(pk=job.pk).update(updated_at=job.updated_at - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        swept = recovery.catalog_sweep(older_than=timedelta(minutes=15))
    assert swept.resumed_uploads == [job.pk]


def test_a_staged_file_that_is_gone_is_a_failure_line_not_a_stuck_job(holiday_zip):
    job = start(holiday_zip, ContentFile(photo_bytes("brick.png"), name="brick.jpg"))
    storages["staging"].delete(staged_names(job)[0])
    job = run(job)
    assert job.state == "done"
    assert counts(job) == (2, 2, 1, 0, 1)
    [failure] = job.failures.all()
    assert failure.name == "holiday.zip" and "upload it again" in failure.reason
