"""The product started as `make run` starts it, for the end-to-end benchmark.

`RunningService` prepares a fresh VAR_DIR the way the Makefile's `run` target does
(migrate, collectstatic, ensure_admin, load_demo_catalog --if-empty), starts
`docker/serve.sh` (gunicorn, one Celery worker and celery beat) in its own process
group on a free port, waits until it answers and its model is warm, finds its processes
in /proc for their resident memory, and stops the whole group at the end.

Settings are `make run`'s defaults: every variable that `.env.example` lists is removed
from the inherited environment, then only what a benchmark needs is set (random weights,
no rate limit, a persistent model cache, and a health token to read the catalog's state).
A `.env` file in the checkout still applies, as it does to `make run`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import cmdline, cpu_seconds, process_children, status_kib

ROOT = Path(__file__).resolve().parents[1]
# The interpreter running the benchmark is the project's (.venv/bin/python): its folder
# goes first on PATH, as `make run` puts .venv/bin there for serve.sh's celery and gunicorn.
BIN = Path(sys.executable).parent
HEALTH_TOKEN = "bench-service-health-token-of-32-characters"  # HEALTH_TOKEN needs 32+
# Read by serve.sh and gunicorn.conf.py, or added by the engine work; not all are listed
# in .env.example yet, and none may leak in from the caller's shell.
EXTRA_SETTINGS = {
    "DJANGO_SETTINGS_MODULE", "HOST", "PORT", "WEB_CONCURRENCY", "WEB_THREADS",
    "WORKER_CONCURRENCY", "EMBEDDING_ENGINE", "EMBEDDING_PRECISION", "EMBEDDING_CACHE_DIR",
    "EMBEDDING_THREADS", "EMBEDDING_BATCH_SIZE", "HEALTH_TOKEN",
}  # fmt: skip


class ServiceFailed(RuntimeError):
    """The product did not start, answer or settle; the message says where to look."""


@dataclass(frozen=True)
class Resident:
    """One process's resident memory, MiB."""

    total: float  # VmRSS
    # RssAnon: without mapped files, which VmRSS counts too: the vector store's memory-mapped
    # file (800 MB at 100,000 vectors), shared through the page cache, and the model file.
    anonymous: float


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of the product's processes at one moment."""

    web: Resident  # the gunicorn worker, the largest if several (the master only forks)
    worker_main: Resident  # the Celery worker's main process
    worker_children: tuple[Resident, ...]  # its pool child(ren) and the embedded beat

    @property
    def worker_pool(self) -> Resident:
        """The largest child: the pool process, the one that runs the model."""
        return max(self.worker_children, key=lambda r: r.total, default=Resident(0.0, 0.0))


class RunningService:
    """`make run` in `var_dir`, as a context manager: prepared and started on entry (call
    `wait_until_ready` next), its whole process group stopped on exit."""

    def __init__(self, var_dir: Path, *, engine: str, cache_dir: Path, overrides: dict):
        self.var_dir = var_dir
        self.port = free_port()
        self.env = service_environment(var_dir, self.port, engine, cache_dir, overrides)
        self.log_path = var_dir / "service.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RunningService:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            for command in (
                ["migrate", "--noinput"],
                ["collectstatic", "--noinput", "-v0"],
                ["ensure_admin"],
                ["load_demo_catalog", "--if-empty"],
            ):
                self.manage(*command, stdout=log)
            self.process = subprocess.Popen(
                [str(ROOT / "docker" / "serve.sh")],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def manage(self, *args: str, stdout=None, timeout: float = 600) -> str:
        """Runs manage.py with the service's environment; raises ServiceFailed on failure."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdout=stdout or subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        output = done.stdout.decode(errors="replace") if done.stdout else ""
        if done.returncode != 0:
            raise ServiceFailed(f"manage.py {' '.join(args)} exited {done.returncode}: {output}")
        return output

    def health(self) -> dict:
        status, body = request(self.port, "GET", "/api/health/", token=HEALTH_TOKEN)
        if status != 200:
            raise ServiceFailed(f"/api/health/ answered {status}: {body[:300]!r}")
        return json.loads(body)

    def wait_until_ready(self, search_body: bytes, timeout: float = 600) -> None:
        """Until health is ok, the demo catalog is settled and a first search answers 200:
        the first search may load the model (or export it, on a first run)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self._catalog_settled() and self._search_answered(search_body):
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(f"Not ready after {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.5)

    def wait_until_idle(self, busy_cores: float = 0.05, timeout: float = 30) -> None:
        """Until the service's processes use less than `busy_cores` of CPU over a second
        (a new worker process finishing its start, say), so they disturb no measurement."""
        deadline = time.monotonic() + timeout
        before = self._cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            after = self._cpu_seconds()
            if after - before < busy_cores:
                return
            before = after

    def _cpu_seconds(self) -> float:
        children = process_children()
        pending, total = [self.process.pid], 0.0
        while pending:
            pid = pending.pop()
            total += cpu_seconds(pid)
            pending += children.get(pid, [])
        return total

    def _catalog_settled(self) -> bool:
        try:
            counts = self.health()["database"]["images"]
        except (OSError, http.client.HTTPException, ServiceFailed):
            return False  # not listening yet, or a part of it is still starting
        return counts["pending"] + counts["processing"] == 0

    def _search_answered(self, search_body: bytes) -> bool:
        status, body = request(self.port, "POST", "/api/search/", search_body)
        if status not in (200, 503):  # 503: the model is not available yet
            raise ServiceFailed(f"The first search answered {status}: {body[:300]!r}")
        return status == 200

    def memory(self) -> ProcessMemory:
        children = process_children()
        serve = self.process.pid
        web_masters = [p for p in children.get(serve, []) if b"gunicorn" in cmdline(p)]
        # celery beat runs beside the worker under serve.sh: the worker is `celery ... worker`.
        workers = [p for p in children.get(serve, []) if b"\0worker\0" in cmdline(p)]
        if len(web_masters) != 1 or len(workers) != 1:
            raise ServiceFailed(f"Expected one gunicorn and one celery under serve.sh ({serve})")
        web = [resident(pid) for pid in children.get(web_masters[0], [])]
        return ProcessMemory(
            web=max(web, key=lambda r: r.total, default=Resident(0.0, 0.0)),
            worker_main=resident(workers[0]),
            worker_children=tuple(resident(p) for p in children.get(workers[0], [])),
        )

    def stop(self) -> None:
        """serve.sh stops gunicorn and the worker on TERM; stragglers get TERM, then KILL."""
        if self.process is None:
            return
        group = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(60)
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if not group_alive(group):
                break
            os.killpg(group, sig)
            deadline = time.monotonic() + grace
            while group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.process.poll() is None:
            self.process.wait(5)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceFailed(
                f"docker/serve.sh exited {self.process.returncode}:\n{self.log_tail()}"
            )


def service_environment(
    var_dir: Path, port: int, engine: str, cache_dir: Path, overrides: dict
) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in settings_names()}
    env.update(
        DJANGO_SETTINGS_MODULE="visualsearch.settings",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VAR_DIR=str(var_dir),
        PORT=str(port),
        EMBEDDING_WEIGHTS="random",  # same arithmetic as ImageNet weights, no download
        SEARCH_RATE_LIMIT="",  # one client address sends every search
        EMBEDDING_CACHE_DIR=str(cache_dir),  # the exported model survives between runs
        HEALTH_TOKEN=HEALTH_TOKEN,  # the detailed health report says what is indexed
    )
    if engine != "default":
        env["EMBEDDING_ENGINE"] = engine
    env.update(overrides)
    return env


def settings_names() -> set[str]:
    example = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE)) | EXTRA_SETTINGS


def request(
    port: int, method: str, path: str, body: bytes | None = None, token: str = ""
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["X-Health-Token"] = token
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resident(pid: int) -> Resident:
    sizes = status_kib(pid)  # empty when the process has exited meanwhile
    return Resident(total=sizes.get("VmRSS", 0) / 1024, anonymous=sizes.get("RssAnon", 0) / 1024)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
