"""Real processes for the integration tests: Redis and Celery workers."""

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
def start_worker(redis_url, settings, tmp_path):
    """Starts real `celery worker` processes (prefork) on this test's own queue, sharing
    its database, media, staging folder and vector store; `**env` overrides settings."""
    from visualsearch.celery import app

    queue = f"test-{uuid.uuid4().hex[:8]}"
    processes: list[subprocess.Popen] = []
    saved = {k: app.conf[k] for k in ("broker_url", "broker_write_url", "task_default_queue")}
    app.conf.update(broker_url=redis_url, broker_write_url=redis_url, task_default_queue=queue)
    _forget_broker_connections(app)

    def start(**overrides: str) -> subprocess.Popen:
        process = _start_worker(
            redis_url, queue, settings, tmp_path / f"worker-{len(processes)}", overrides
        )
        processes.append(process)
        return process

    yield start
    app.conf.update(saved)
    _forget_broker_connections(app)
    for process in processes:
        stop_worker(process)


@pytest.fixture
def worker(start_worker):
    return start_worker()


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    process.log_file.close()


def _start_worker(redis_url, queue, settings, folder: Path, overrides) -> subprocess.Popen:
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "visualsearch.settings",
        "VAR_DIR": str(folder / "var"),
        "DATABASE_URL": _database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "STAGING_ROOT": str(settings.STAGING_ROOT),
        "VECTOR_STORE_PATH": str(settings.VECTOR_STORE_PATH),
        "EMBEDDING_WEIGHTS": "random",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_QUEUE": queue,
        "INDEX_BATCH_SIZE": "3",
        **overrides,
    }
    log = open(folder / "worker.log", "wb")  # noqa: SIM115 - closed by stop_worker
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "visualsearch", "worker", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--loglevel=INFO", "-Q", queue],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    process.log_file, process.log_path = log, folder / "worker.log"
    return process


def _forget_broker_connections(app) -> None:
    """The app caches its producer pool; drop it so the next send uses the new broker."""
    from kombu import pools

    pools.reset()  # kombu's process-wide pools, keyed by broker URL
    app._pool = None
    app.amqp._producer_pool = None
