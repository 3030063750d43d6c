"""celery beat killed for memory, together with the worker's pool processes: under
docker/serve.sh (`make run`, ROLE=all) it is started again and periodic tasks run again
within two intervals, or everything stops with a clear message; and wherever a beat stays
dead, the health report names the late tasks."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from django.utils import timezone

from catalog.models import PeriodicTaskRun
from tests.integration.conftest import _database_url
from tests.project_process import ROOT, project_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

SWEEP = "catalog.tasks.send_unqueued"
TOKEN = secrets.token_urlsafe(32)


# --- Processes, found by their command lines in /proc ---------------------------------


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


def celery_children(parent: int, command: str) -> list[int]:
    """Children of `parent` running `celery ... <command>` (worker or beat)."""
    return [pid for pid in children(parent) if command in command_line(pid)]


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def last_sweep() -> datetime | None:
    run = PeriodicTaskRun.objects.filter(name=SWEEP).first()
    return run.last_run_at if run else None


def wait_for(condition, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    return None


# --- docker/serve.sh ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """docker/serve.sh running web, worker and beat, with its own broker folder and port."""

    def __init__(self, folder: Path, settings, broker: str, **env: str):
        folder.mkdir(parents=True)
        self.port = _free_port()
        self.log_path = folder / "serve.log"
        variables = project_env(
            folder / "var",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            DATABASE_URL=_database_url(),
            CELERY_BROKER_URL=broker,
            CELERY_QUEUE=f"test-{uuid.uuid4().hex[:8]}",
            MEDIA_ROOT=str(settings.MEDIA_ROOT),
            STAGING_ROOT=str(settings.STAGING_ROOT),
            VECTOR_STORE_PATH=str(settings.VECTOR_STORE_PATH),
            HOST="127.0.0.1",
            PORT=str(self.port),
            WORKER_CONCURRENCY="1",
            WEB_THREADS="2",
            HEALTH_TOKEN=TOKEN,
            **env,
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            ["bash", "docker/serve.sh"],
            cwd=ROOT,
            env=variables,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to clean up after a failure
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def beat(self) -> int | None:
        found = celery_children(self.process.pid, "beat")
        return found[0] if found else None

    def worker(self) -> int | None:
        found = celery_children(self.process.pid, "worker")
        return found[0] if found else None

    def get(self, path: str) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"X-Health-Token": TOKEN}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # Anything the script left behind, in the process group it was started in.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture
def serve(tmp_path, settings, redis_url):
    """Starts docker/serve.sh; its broker is Redis (a database number of its own) unless
    `broker` names another."""
    started: list[Served] = []
    own_database = redis_url.rsplit("/", 1)[0] + "/11"

    def start(broker: str = own_database, **env: str) -> Served:
        served = Served(tmp_path / f"serve-{len(started)}", settings, broker, **env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def test_serve_sh_restarts_a_killed_beat_and_periodic_tasks_run_again(serve):
    every = 10.0
    served = serve(OUTBOX_SWEEP_SECONDS=str(every))
    assert wait_for(last_sweep, timeout=120), f"no sweep ever ran; serve.sh log:\n{served.log}"

    # As an out-of-memory kill can: beat and the worker's pool processes at once.
    beat, worker = served.beat(), served.worker()
    assert beat, served.log
    pool = children(worker)
    assert pool, served.log
    killed_at = timezone.now()
    kill([beat, *pool])

    ran_again = wait_for(lambda: (last_sweep() or killed_at) > killed_at, timeout=2 * every)
    assert ran_again, f"no sweep within two intervals of the kill; log:\n{served.log}"
    assert served.process.poll() is None
    assert served.beat() not in (None, beat)
    assert "celery beat exited (status 137)" in served.log
    status, _ = served.get("/api/health/live/")
    assert status == 200
    # The container's HEALTHCHECK asks the same liveness path.
    check = subprocess.run(
        [sys.executable, "docker/healthcheck.py", "web"],
        cwd=ROOT,
        env={**os.environ, "PORT": str(served.port)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_serve_sh_stops_everything_loudly_when_beat_keeps_dying(serve):
    served = serve(BEAT_MAX_QUICK_EXITS="2")
    worker = wait_for(served.worker, timeout=30)
    assert worker, served.log
    for _ in range(2):
        beat = wait_for(served.beat, timeout=30)
        assert beat, served.log
        kill([beat])
        wait_for(lambda beat=beat: served.beat() != beat, timeout=30)
    assert served.process.wait(60) == 1
    assert "celery beat exited (status 137) 2 times in a row" in served.log
    assert "everything stops" in served.log
    assert not Path(f"/proc/{worker}").exists()


def test_a_dead_embedded_beat_is_named_by_the_health_report(start_worker, staff_client, settings):
    """`celery worker -B` (what `make run` ran before): its beat child dies with the pool
    processes, the worker goes on and nothing restarts beat. Health names the late task."""
    every = 2.0
    settings.CELERY_BEAT_SCHEDULE = {"send-unqueued": {"task": SWEEP, "schedule": every}}
    worker = start_worker(beat=True, OUTBOX_SWEEP_SECONDS=str(every))
    assert wait_for(last_sweep, timeout=120), worker.log_path.read_text()[-5000:]
    assert staff_client.get("/api/health/ready/").json()["beat"]["ok"] is True

    kill(children(worker.pid))  # the embedded beat and the pool processes
    killed_at = timezone.now()

    def beat_named_late():
        body = staff_client.get("/api/health/ready/").json()
        return body if SWEEP in body["beat"]["late"] else None

    body = wait_for(beat_named_late, timeout=60, interval=1)
    assert body, worker.log_path.read_text()[-5000:]
    assert body["beat"]["ok"] is False and "celery beat" in body["beat"]["error"]
    assert body["status"] == "degraded"
    assert worker.poll() is None  # the worker itself went on, as in the finding
    assert last_sweep() < killed_at


def test_with_the_filesystem_broker_a_killed_idle_pool_process_does_not_stall_the_worker(
    serve,
):
    """billiard's idle pool process used to wait for a task holding the shared pipe's lock;
    killed there, it left the lock held for ever (visualsearch.pool_queue)."""
    every = 5.0
    served = serve(broker="filesystem://localhost//", OUTBOX_SWEEP_SECONDS=str(every))
    assert wait_for(last_sweep, timeout=120), f"no sweep ever ran; serve.sh log:\n{served.log}"
    pool = children(served.worker())
    killed_at = timezone.now()
    kill(pool)  # beat lives: only the worker's pool process is lost
    ran_again = wait_for(lambda: (last_sweep() or killed_at) > killed_at, timeout=4 * every)
    assert ran_again, f"no sweep within four intervals of the kill; log:\n{served.log}"
