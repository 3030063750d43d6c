"""Where uploads wait for the worker (STAGING_STORAGE): which storage each setting picks,
and uploads staged in S3 (moto's server, over HTTP) that are indexed, cleaned up and never
lost.
"""

from __future__ import annotations

import json

import pytest
from botocore.config import Config

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from catalog.staging import StagingFolder
from tests.conftest import (
    photo_bytes,
    photo_file,
    s3_client,
    s3_empty_and_delete,
    s3_storage_options,
)
from tests.project_process import project_env, run_manage, run_python

S3 = "storages.backends.s3.S3Storage"
CLOUDINARY = {"IMAGE_HOST": "cloudinary", "CLOUDINARY_URL": "cloudinary://key:secret@cloud"}


# --- Which storage the settings pick (read by a fresh process, as at start-up) -------------


def staging_settings(tmp_path, **variables: str) -> dict:
    code = (
        "import json; from django.conf import settings; print(json.dumps({"
        "'choice': settings.STAGING_STORAGE, 'staging': settings.STORAGES['staging'],"
        "'bucket': getattr(settings, 'AWS_STORAGE_BUCKET_NAME', None)}))"
    )
    result = run_python(code, project_env(tmp_path, **variables))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_local_image_host_stages_in_the_local_folder(tmp_path):
    values = staging_settings(tmp_path)
    assert values["choice"] == "local"
    assert values["staging"] == {"BACKEND": "catalog.staging.StagingFolder"}


def test_the_storages_host_stages_under_staging_next_to_its_images(tmp_path):
    values = staging_settings(
        tmp_path, IMAGE_HOST="storages", AWS_STORAGE_BUCKET_NAME="shop", AWS_LOCATION="v1/"
    )
    assert values["choice"] == "storages"
    assert values["staging"] == {"BACKEND": S3, "OPTIONS": {"location": "v1/staging"}}
    assert values["bucket"] == "shop"


def test_staging_options_can_give_it_a_bucket_of_its_own(tmp_path):
    values = staging_settings(
        tmp_path,
        IMAGE_HOST="storages",
        IMAGE_STORAGE_OPTIONS='{"bucket_name": "public-images", "location": "v1"}',
        STAGING_STORAGE_OPTIONS='{"bucket_name": "private-uploads"}',
    )
    assert values["staging"]["OPTIONS"] == {
        "bucket_name": "private-uploads",
        "location": "v1/staging",
    }


def test_cloudinary_stages_in_s3_when_asked(tmp_path):
    values = staging_settings(
        tmp_path, **CLOUDINARY, STAGING_STORAGE="storages", AWS_STORAGE_BUCKET_NAME="uploads"
    )
    assert values["staging"] == {"BACKEND": S3, "OPTIONS": {"location": "staging"}}
    assert values["bucket"] == "uploads"


def test_an_unknown_staging_storage_stops_start_up_with_the_choices(tmp_path):
    result = run_python(
        "import django; django.setup()", project_env(tmp_path, STAGING_STORAGE="nfs")
    )
    assert result.returncode != 0
    assert "STAGING_STORAGE must be one of local, storages; got 'nfs'" in result.stderr


@pytest.mark.parametrize(
    ("variables", "warned"),
    [
        ({}, False),  # one machine: the folder is right
        (CLOUDINARY, True),  # several machines, probably: nobody said where to stage
        ({**CLOUDINARY, "STAGING_STORAGE": "local"}, False),  # a shared disk, on purpose
        ({**CLOUDINARY, "STAGING_STORAGE": "storages"}, False),
    ],
)
def test_start_up_warns_when_a_remote_host_stages_on_a_local_disk_by_default(
    tmp_path, variables, warned
):
    result = run_manage("check", env=project_env(tmp_path, **variables))
    assert result.returncode == 0, result.stderr
    assert ("catalog.W001" in result.stderr) is warned
    if warned:
        assert "set STAGING_STORAGE=storages" in result.stderr


# --- Uploads staged in S3 ------------------------------------------------------------------


@pytest.fixture
def s3_staging(settings, s3_server):
    """Staging in a bucket of moto's S3 server; images still published on the local disk."""
    s3, bucket = s3_client(s3_server), "staging-tests"
    s3.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "staging": {
            "BACKEND": S3,
            "OPTIONS": s3_storage_options(s3_server, bucket, location="staging"),
        },
    }
    yield lambda: sorted(
        item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    )
    s3_empty_and_delete(s3, bucket)


def staged_files_on_disk(settings) -> list:
    return [path for path in settings.STAGING_ROOT.rglob("*") if path.is_file()]


@pytest.mark.django_db
def test_an_upload_is_staged_in_s3_and_not_on_this_machines_disk(s3_staging, settings):
    image, _ = services.image_create(file=photo_file("coffee.png"))
    assert s3_staging() == [f"staging/{image.staged_file.name}"]
    with image.staged_file.open("rb") as staged:
        assert staged.read() == photo_bytes("coffee.png")
    assert staged_files_on_disk(settings) == []


@pytest.mark.django_db
def test_indexing_reads_the_s3_staged_copy_then_removes_it(s3_staging, settings):
    image, _ = services.image_create(file=photo_file("coffee.png"))
    report = images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert report.indexed == [image.pk]
    assert image.status == CatalogImage.Status.INDEXED and image.staged_file.name == ""
    assert s3_staging() == []
    assert (settings.MEDIA_ROOT / image.hosted_key).read_bytes() == photo_bytes("coffee.png")


@pytest.mark.django_db
def test_a_late_clean_up_of_a_deleted_upload_never_removes_the_copy_of_its_reupload(
    s3_staging, django_capture_on_commit_callbacks, eager_celery
):
    first, _ = services.image_create(file=photo_file("coffee.png"))
    with django_capture_on_commit_callbacks() as clean_up:  # not run yet
        services.image_delete(image=first)
    again, _ = services.image_create(file=photo_file("coffee.png"))
    for callback in clean_up:
        callback()
    assert s3_staging() == [f"staging/{again.staged_file.name}"]
    images_index(image_ids=[again.pk])
    again.refresh_from_db()
    assert again.status == CatalogImage.Status.INDEXED


@pytest.mark.django_db
def test_an_unreachable_staging_store_fails_the_image_for_a_retry_and_keeps_the_upload(
    s3_staging, settings
):
    image, _ = services.image_create(file=photo_file("coffee.png"))
    reachable = settings.STORAGES
    staging = reachable["staging"]
    settings.STORAGES = {
        **reachable,
        "staging": {
            **staging,
            "OPTIONS": {**staging["OPTIONS"], "endpoint_url": "http://127.0.0.1:1"},
        },
    }
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert (image.status, image.failure_kind) == ("failed", "transient")
    assert "The stored file could not be read" in image.failure_reason

    settings.STORAGES = reachable
    assert s3_staging() == [f"staging/{image.staged_file.name}"]  # nothing was lost
    services.images_retry(images=[image], enqueue=False)
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == CatalogImage.Status.INDEXED
    assert s3_staging() == []


class FolderRefusingDeletes(StagingFolder):
    """A staging folder whose deletes fail, as an unreachable object store's would."""

    def delete(self, name: str) -> None:
        raise OSError("the staging store is unreachable")


@pytest.mark.django_db
def test_a_staged_copy_that_cannot_be_removed_leaves_the_image_indexed_and_goes_next_time(
    settings,
):
    reachable = settings.STORAGES
    settings.STORAGES = {
        **reachable,
        "staging": {"BACKEND": f"{__name__}.FolderRefusingDeletes"},
    }
    image, _ = services.image_create(file=photo_file("coffee.png"))
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == CatalogImage.Status.INDEXED
    assert image.staged_file.storage.exists(image.staged_file.name)  # kept on the row

    settings.STORAGES = reachable
    images_index(image_ids=[image.pk])  # a later run, e.g. a reindex
    image.refresh_from_db()
    assert image.staged_file.name == "" and staged_files_on_disk(settings) == []


@pytest.fixture
def unreachable_staging(settings):
    """Staging on an object store nothing answers for (connections refused at once)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staging": {
            "BACKEND": S3,
            "OPTIONS": {
                **s3_storage_options("http://127.0.0.1:1", "nowhere", location="staging"),
                "client_config": Config(retries={"max_attempts": 1}, connect_timeout=1),
            },
        },
    }


@pytest.mark.django_db
def test_an_upload_while_staging_is_unreachable_is_a_503_and_saves_nothing(
    unreachable_staging, staff_client
):
    answer = staff_client.post("/api/images/", {"image": photo_file("coffee.png")})
    assert answer.status_code == 503
    assert answer.json()["error"] == "staging_unavailable"
    assert "again" in answer.json()["detail"]
    assert not CatalogImage.objects.exists()


@pytest.mark.django_db
def test_an_import_while_staging_is_unreachable_reports_each_file(unreachable_staging, tmp_path):
    from catalog.importing import images_import
    from catalog.sources import find_image_sources

    (tmp_path / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    report = images_import(find_image_sources([tmp_path]))
    assert report.image_ids == []
    assert "could not be stored" in next(iter(report.rejected.values()))


@pytest.mark.django_db
def test_an_admin_upload_while_staging_is_unreachable_says_so_and_saves_nothing(
    unreachable_staging, admin_client
):
    answer = admin_client.post(
        "/admin/catalog/catalogimage/add/",
        {"image": photo_file("coffee.png"), "title": "Coffee", "tags": "", "is_active": "on"},
        follow=True,
    )
    assert answer.status_code == 200
    assert "could not be stored" in answer.content.decode()
    assert not CatalogImage.objects.exists()


# --- Bulk uploads' files --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_bulk_upload_waits_in_s3_for_its_job_and_is_removed_after(s3_staging, settings):
    import io
    import zipfile

    from django.core.files.base import ContentFile

    from catalog import tasks
    from catalog.pipeline import bulk_uploads

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("coffee.jpg", photo_bytes("coffee.png"))
        zipped.writestr("rocket.jpg", photo_bytes("rocket.jpg"))
    job = bulk_uploads.bulk_upload_start(files=[ContentFile(archive.getvalue(), name="two.zip")])
    assert s3_staging() == [f"staging/{job.files[0]['staged']}"]
    assert staged_files_on_disk(settings) == []

    tasks.run_bulk_upload_job(job.pk)
    job.refresh_from_db()
    assert (job.created, job.failed) == (2, 0)
    # Only the two pictures' own staged copies are left, for the worker to index.
    assert s3_staging() == sorted(
        f"staging/{name}" for name in CatalogImage.objects.values_list("staged_file", flat=True)
    )


@pytest.mark.django_db
def test_a_bulk_upload_while_staging_is_unreachable_says_so_and_saves_nothing(
    unreachable_staging, admin_client
):
    from catalog.models import BulkUploadJob

    answer = admin_client.post(
        "/admin/catalog/catalogimage/bulk-upload/", {"files": [photo_file("coffee.png")]}
    )
    assert answer.status_code == 200
    assert "could not be stored" in answer.content.decode()
    assert not BulkUploadJob.objects.exists() and not CatalogImage.objects.exists()
