"""The whole path with real processes: upload -> Redis -> Celery worker -> store -> search."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

from catalog.models import CatalogImage
from tests.conftest import b64, photo_bytes, photo_file

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url():
    """The Redis on 127.0.0.1:6379, or a throwaway redis-server when none answers."""
    if _answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("No Redis answers on 127.0.0.1:6379 and redis-server is not installed.")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="redis-")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _answers("127.0.0.1", port):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def worker(redis_url, settings, tmp_path):
    """A real `celery worker` (prefork) on its own queue, sharing DB, media and store."""
    from visualsearch.celery import app

    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "visualsearch.settings",
        "VAR_DIR": str(tmp_path / "worker-var"),
        "DATABASE_URL": _database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "STAGING_ROOT": str(settings.STAGING_ROOT),
        "VECTOR_STORE_PATH": str(settings.VECTOR_STORE_PATH),
        "EMBEDDING_WEIGHTS": "random",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_QUEUE": queue,
        "INDEX_BATCH_SIZE": "3",
    }
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - outlives this block
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "visualsearch", "worker", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--loglevel=INFO", "-Q", queue],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    saved = {k: app.conf[k] for k in ("broker_url", "broker_write_url", "task_default_queue")}
    app.conf.update(broker_url=redis_url, broker_write_url=redis_url, task_default_queue=queue)
    _forget_broker_connections(app)
    process.log_path = tmp_path / "worker.log"
    yield process
    app.conf.update(saved)
    _forget_broker_connections(app)
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _forget_broker_connections(app) -> None:
    """The app caches its producer pool; drop it so the next send uses the new broker."""
    from kombu import pools

    pools.reset()  # kombu's process-wide pools, keyed by broker URL
    app._pool = None
    app.amqp._producer_pool = None


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


def _worker_log(process) -> str:
    return f"worker exit code {process.poll()}; log:\n{process.log_path.read_text()[-5000:]}"


def _pool_children(worker) -> list[int]:
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_reindex_job_survives_its_worker_process_being_killed(worker):
    """The pool process dies mid-job; the job resumes and indexes every image exactly once."""
    import signal

    from catalog import jobs, services
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
