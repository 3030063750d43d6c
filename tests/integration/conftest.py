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


class RedisServer:
    """A redis-server of the test's own, on a fixed free port, to stop and start again."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server).")
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server for this test alone (the shared one on 6379 must never be stopped)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


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

    def start(*, beat: bool = False, app: str = "visualsearch", **overrides: str):
        """beat: embed celery beat (-B); app: the Celery app module (-A)."""
        folder = tmp_path / f"worker-{len(processes)}"
        process = _start_worker(redis_url, queue, settings, folder, overrides, beat, app)
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


def _start_worker(
    redis_url, queue, settings, folder: Path, overrides, beat=False, app="visualsearch"
) -> subprocess.Popen:
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
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "--concurrency=1",
               "--without-gossip", "--without-mingle", "--loglevel=INFO", "-Q", queue]  # fmt: skip
    if beat:  # its schedule file in the worker's own folder, never the project's var/
        command += ["-B", "--schedule", str(folder / "celerybeat-schedule")]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_file, process.log_path = log, folder / "worker.log"
    return process


def _forget_broker_connections(app) -> None:
    """The app caches its producer pool; drop it so the next send uses the new broker."""
    from kombu import pools

    pools.reset()  # kombu's process-wide pools, keyed by broker URL
    app._pool = None
    app.amqp._producer_pool = None
