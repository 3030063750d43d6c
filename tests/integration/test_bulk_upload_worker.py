"""A bulk upload imported by a real worker, whose pool process is killed in the middle of
the zip: the job resumes where it stopped, creates nothing twice, and skips only the
picture that kept killing its worker."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from django.core.files.base import ContentFile

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline import bulk_uploads
from tests.conftest import encode, photo
from tests.integration.test_worker import _worker_log

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png", "camera.png"]


def test_a_worker_killed_mid_job_resumes_it_and_nothing_is_created_twice(start_worker):
    pictures = {f"{index}.png": encode(photo(name), "PNG") for index, name in enumerate(NAMES)}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in pictures.items():
            zipped.writestr(name, data)
    culprit = services.picture_check(ContentFile(pictures["2.png"], name="2.png"))
    worker = start_worker(app="tests.integration.killer_app", KILL_SHA256=culprit.decoded.sha256)

    job = bulk_uploads.bulk_upload_start(files=[ContentFile(archive.getvalue(), name="six.zip")])
    deadline = time.monotonic() + 240
    while not job.is_finished:
        assert time.monotonic() < deadline, _worker_log(worker)
        time.sleep(0.5)
        job.refresh_from_db()

    log = _worker_log(worker)
    assert log.count("exited with 'signal 9 (SIGKILL)'") == 2, log  # then it was skipped
    assert (job.total, job.read, job.created, job.duplicates, job.failed) == (6, 6, 5, 0, 1)
    assert CatalogImage.objects.count() == 5  # the two before the kills, once each
    [failure] = job.failures.all()
    assert failure.name == "six.zip:2.png" and "killed" in failure.reason
    assert job.files_removed_at is not None
    assert worker.poll() is None  # and the worker is still serving
