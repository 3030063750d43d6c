"""Slow URLs cannot take the site down: the web process as `make run` starts it (gunicorn,
docker/gunicorn.conf.py, 4 request threads), 8 URL searches at a server that drips its answer
(tests/fakes/slow_server.py), and at the same moment an ordinary search by picture.

The drips hold at most URL_FETCH_MAX_IN_FLIGHT (2) request threads, each until the deadline
(3 s here) at the latest; the others are refused at once with 503 url_fetch_busy; the search
by picture, the page and the liveness path answer throughout.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import b64, photo_bytes
from tests.fakes.slow_server import SlowServer
from tests.integration.conftest import ROOT, stop_worker
from tests.integration.test_cluster import free_port
from tests.project_process import project_env, run_manage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DEADLINE = 3
IN_FLIGHT = 2
DRIPS = 8
LIVENESS = "/api/health/live/"  # the process answers; no dependency is asked
SLOW = ["status-line", "header-lines", "continue", "chunked-size", "body"]


@dataclass
class Answer:
    status: int | None  # None: no answer (the request failed or timed out)
    error: str | None
    retry_after: str | None
    took: float


def post(url: str, body: dict, timeout: float = 30) -> Answer:
    started = time.monotonic()
    try:
        response = requests.post(url, json=body, timeout=timeout)
    except requests.RequestException:
        return Answer(None, None, None, time.monotonic() - started)
    error = response.json().get("error") if response.status_code != 200 else None
    return Answer(
        response.status_code, error, response.headers.get("Retry-After"), time.monotonic() - started
    )


class LivenessProbe:
    """GETs `url` every 0.1 s, on its own, until stopped; records each answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LivenessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            started = time.monotonic()
            try:
                status = requests.get(self.url, timeout=10).status_code
            except requests.RequestException:
                status = None
            self.answers.append(Answer(status, None, None, time.monotonic() - started))


@pytest.fixture
def drip():
    with SlowServer(interval=0.05) as server:
        yield server


@pytest.fixture
def web(tmp_path, drip):
    """The web process, allowed to fetch from the drip server on 127.0.0.1; its base URL."""
    port = free_port()
    env = project_env(
        tmp_path / "var",
        DJANGO_SETTINGS_MODULE="tests.integration.loopback_fetch_settings",
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        WEB_THREADS="4",  # docker/gunicorn.conf.py's default, stated
        URL_FETCH_DEADLINE_SECONDS=str(DEADLINE),
        URL_FETCH_MAX_IN_FLIGHT=str(IN_FLIGHT),
        URL_FETCH_PORTS=f"80,443,{drip.port}",
    )
    migrated = run_manage("migrate", "--noinput", env=env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 - closed by stop_worker
    command = [sys.executable, "-m", "gunicorn", "visualsearch.wsgi",
               "-c", "docker/gunicorn.conf.py"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    process.log_file = log
    base = f"http://127.0.0.1:{port}"
    waited = time.monotonic() + 60
    while not answers(base + LIVENESS):
        assert process.poll() is None, (tmp_path / "web.log").read_text()
        assert time.monotonic() < waited, (tmp_path / "web.log").read_text()
        time.sleep(0.2)
    yield base
    stop_worker(process)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_slow_url_searches_leave_the_site_answering(web, drip):
    search = f"{web}/api/search/"
    picture = {"image": b64(photo_bytes("coffee.png")), "top_k": 3}
    # The model loads on the first search; its time is not what this test measures.
    assert post(search, picture, timeout=120).status == 200

    slow_urls = [drip.url(b) for b in itertools.islice(itertools.cycle(SLOW), DRIPS)]
    with LivenessProbe(web + LIVENESS) as liveness, ThreadPoolExecutor(DRIPS) as pool:
        started = time.monotonic()
        drips = [pool.submit(post, search, {"url": url}) for url in slow_urls]
        while drip.connections < IN_FLIGHT and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert drip.open_connections == IN_FLIGHT  # the drips are in flight
        by_picture = post(search, picture, timeout=30)
        page_asked = time.monotonic()
        page = requests.get(web + "/", timeout=30)
        page_took = time.monotonic() - page_asked
        answered = [future.result() for future in drips]
        time.sleep(0.5)  # a few more liveness probes after the drips ended

    assert by_picture.status == 200 and by_picture.took < 2, by_picture
    assert page.status_code == 200 and page_took < 2, (page.status_code, page_took)
    busy = [a for a in answered if a.error == "url_fetch_busy"]
    cut = [a for a in answered if a.error == "url_fetch_failed"]
    assert len(busy) == DRIPS - IN_FLIGHT and len(cut) == IN_FLIGHT, answered
    assert all(a.status == 503 and a.retry_after == str(DEADLINE) for a in busy), busy
    assert all(a.took < 2 for a in busy), busy  # refused at once, not queued
    assert all(a.status == 400 and a.took < DEADLINE + 2 for a in cut), cut
    assert drip.connections == IN_FLIGHT  # the refused ones never connected
    assert len(liveness.answers) >= 10, liveness.answers  # asked all along, every 0.1 s
    assert all(a.status == 200 and a.took < 2 for a in liveness.answers), liveness.answers
    let_go = time.monotonic() + 5
    while drip.open_connections and time.monotonic() < let_go:
        time.sleep(0.05)
    assert drip.open_connections == 0  # the web process closed every drip
