"""The whole path with real processes: upload -> Redis -> Celery worker -> store -> search."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from catalog.models import CatalogImage
from tests.conftest import b64, photo_bytes, photo_file

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_for_status(image_id: int, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = CatalogImage.objects.get(pk=image_id).status
        if status in ("indexed", "failed"):
            return status
        time.sleep(0.5)
    return status


def test_an_upload_is_indexed_by_a_real_worker_and_found_by_search(worker, staff_client, client):
    for name in ("coffee.png", "chelsea.png", "astronaut.png"):
        response = staff_client.post("/api/images/", {"image": photo_file(name)})
        assert response.status_code == 201
        image_id = response.json()["id"]
    assert wait_for_status(image_id) == "indexed", _worker_log(worker)

    results = client.post(
        "/api/search/",
        {"image": b64(photo_bytes("astronaut.png"))},
        content_type="application/json",
    ).json()["results"]
    assert results[0]["id"] == image_id
    assert results[0]["similarity"] >= 99.0

    # Deleting goes through the worker too: the vector disappears from this process's store.
    from search.vectorstores import get_vector_store

    assert staff_client.delete(f"/api/images/{image_id}/").status_code == 204
    deadline = time.monotonic() + 60
    while str(image_id) in get_vector_store().ids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert str(image_id) not in get_vector_store().ids()


def wait_until_settled(ids: list[int], timeout: float) -> dict[int, str]:
    """{id: status} once every image is indexed or failed, or at `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = dict(CatalogImage.objects.filter(pk__in=ids).values_list("pk", "status"))
        if set(statuses.values()) <= {"indexed", "failed"}:
            break
        time.sleep(0.5)
    return statuses


def _worker_log(process) -> str:
    return f"worker exit code {process.poll()}; log:\n{process.log_path.read_text()[-5000:]}"


def _pool_children(worker) -> list[int]:
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_reindex_job_survives_its_worker_process_being_killed(worker):
    """The pool process dies mid-job; the job resumes and indexes every image exactly once."""
    import signal

    from catalog import services
    from catalog.pipeline import jobs
    from search.vectorstores import get_vector_store

    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png",
             "camera.png", "moon.png", "coins.png", "grass.png", "gravel.png"]  # fmt: skip
    for name in names:
        services.image_create(file=photo_file(name), enqueue=False)
    job = jobs.reindex_job_start(scope="all")
    assert job.total == len(names)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.done >= 3:  # the first batch is recorded; the next one is under way
            break
        time.sleep(0.05)
    assert job.state == "running", _worker_log(worker)
    for pid in _pool_children(worker):
        os.kill(pid, signal.SIGKILL)

    while time.monotonic() < deadline and not job.is_finished:
        time.sleep(0.5)
        job.refresh_from_db()
    assert job.state == "done", _worker_log(worker)
    assert (job.done, job.failed) == (len(names), 0)
    assert set(CatalogImage.objects.values_list("status", flat=True)) == {"indexed"}
    assert get_vector_store().count() == len(names)
    assert "SIGKILL" in worker.log_path.read_text()  # the kill did happen mid-run


def test_import_images_wait_with_a_real_worker_ends_when_the_twins_are_indexed(worker, tmp_path):
    """The same picture twice in one folder: --wait ends once the two distinct images are
    indexed (it used to wait for three rows, so for the whole timeout)."""
    import io

    from django.core.management import call_command

    (tmp_path / "cat.jpg").write_bytes(photo_bytes("chelsea.png"))
    (tmp_path / "cat (copy).jpg").write_bytes(photo_bytes("chelsea.png"))
    (tmp_path / "coffee.jpg").write_bytes(photo_bytes("coffee.png"))
    out = io.StringIO()
    started = time.monotonic()
    call_command("import_images", str(tmp_path), "--wait", "--timeout", "180", stdout=out)
    assert time.monotonic() - started < 150, _worker_log(worker)
    assert "2 added, 1 already in the catalog, 0 rejected." in out.getvalue()
    assert "2 indexed" in out.getvalue()
