"""Health: liveness (the process answers), readiness (its dependencies answer), and who may
see the details. /api/health/ is readiness, kept for compatibility."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.project_process import project_env, run_python

pytestmark = pytest.mark.django_db
HEALTH = "/api/health/"
LIVE = "/api/health/live/"
READY = "/api/health/ready/"
TOKEN = "t" * 32
EVERY_PART_UP = {
    "database": True,
    "broker": True,
    "vector_store": True,
    "model": True,
    "beat": True,
}


class StallingServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: a hung Redis. It counts the
    connections it accepted, so a test can tell how many probes reached it."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._socket.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._accepted)

    def _accept(self):
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:  # closed
                return
            with self._lock:
                self._accepted.append(conn)

    def connections_after_a_moment(self, at_least: int, timeout: float = 5.0) -> int:
        """The count once it reached `at_least` (or `timeout` passed), and a moment more for
        any extra connection to show: the kernel completes a connection before this server's
        thread accepts it, later still on a busy machine."""
        deadline = time.monotonic() + timeout
        while self.connections < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        return self.connections

    def close(self):
        self._socket.close()
        with self._lock:
            for conn in self._accepted:
                conn.close()


def _use_broker(url: str):
    from visualsearch.celery import app

    previous = app.conf.broker_write_url
    app.conf.broker_write_url = url
    return lambda: setattr(app.conf, "broker_write_url", previous)


@pytest.fixture
def broker_down():
    restore = _use_broker("redis://127.0.0.1:1/0")  # nothing listens on port 1
    yield
    restore()


@pytest.fixture
def hung_broker(settings):
    """The broker is a server that accepts connections and never answers."""
    settings.HEALTH_PROBE_TIMEOUT_SECONDS = 0.5
    server = StallingServer()
    restore = _use_broker(f"redis://127.0.0.1:{server.port}/0")
    yield server
    restore()
    server.close()


# --- Liveness ------------------------------------------------------------------------


def test_liveness_answers_without_touching_any_dependency(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get(LIVE)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_liveness_answers_while_the_broker_is_down(client, broker_down):
    assert client.get(LIVE).status_code == 200
    assert client.get(READY).status_code == 503


def test_with_the_database_unreachable_liveness_answers_and_readiness_does_not(tmp_path):
    code = (
        "import json, django; django.setup();"
        "from django.test import Client; c = Client(HTTP_HOST='localhost');"
        f"print(json.dumps([c.get(p).status_code for p in {[LIVE, READY, HEALTH]!r}]))"
    )
    unreachable = f"sqlite:///{tmp_path}/no-such-folder/db.sqlite3"
    done = run_python(code, project_env(tmp_path, DATABASE_URL=unreachable))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [200, 503, 503]


def test_liveness_is_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/").status_code == 301
    for path in (LIVE, READY, HEALTH):
        assert client.get(path).status_code == 200, path


def test_a_bad_api_token_does_not_fail_liveness(client):
    # Liveness authenticates no one: an unknown `Authorization: Token` would need the database.
    assert client.get(LIVE, headers={"Authorization": "Token nope"}).status_code == 200


# --- Readiness -----------------------------------------------------------------------


def test_anyone_gets_a_shallow_status(client):
    for path in (READY, HEALTH):
        response = client.get(path)
        assert response.status_code == 200
        body = response.json()
        assert body == {"status": "ok", "checks": EVERY_PART_UP}


def test_anonymous_users_never_see_internal_error_text(client, broker_down):
    response = client.get(READY)
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "checks": EVERY_PART_UP | {"broker": False},
    }
    assert "127.0.0.1" not in response.content.decode()


def test_staff_see_the_details(staff_client, broker_down):
    body = staff_client.get(HEALTH).json()
    assert body["broker"]["ok"] is False
    assert body["broker"]["error"]
    assert body["vector_store"]["backend"] == "local"
    assert body["model"]["id"] == "resnet50/random-seed0"


def test_readiness_probes_once_within_the_cache_window(client, settings, hung_broker):
    settings.HEALTH_CACHE_SECONDS = 60
    assert client.get(READY).status_code == 503
    assert hung_broker.connections_after_a_moment(1) == 1
    for path in (READY, READY, HEALTH, READY, HEALTH):
        assert client.get(path).status_code == 503
    assert hung_broker.connections_after_a_moment(1) == 1


def test_readiness_probes_again_once_the_cache_window_has_passed(client, settings, hung_broker):
    settings.HEALTH_CACHE_SECONDS = 0
    client.get(READY)
    assert hung_broker.connections_after_a_moment(1) == 1
    # The first check gives up after its 0.5 s; until then a second would share it.
    time.sleep(1.0)
    client.get(READY)
    assert hung_broker.connections_after_a_moment(2) == 2


def test_concurrent_readiness_calls_share_one_probe(settings, hung_broker):
    from django.test import Client

    settings.HEALTH_CACHE_SECONDS = 0  # nothing cached: only the probe in flight is shared
    settings.HEALTH_PROBE_TIMEOUT_SECONDS = 3  # in flight long enough for a busy machine
    callers = 8
    start = threading.Barrier(callers)
    statuses: list[int] = []

    def call():
        start.wait()
        statuses.append(Client().get(READY).status_code)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [503] * callers
    assert hung_broker.connections_after_a_moment(1) == 1


def test_a_hung_broker_holds_readiness_no_longer_than_its_probe_timeout(client, hung_broker):
    started = time.monotonic()
    body = client.get(READY).json()
    # Generous: the probe gives up after 0.5 s (it took 6 s with kombu's own retries).
    assert time.monotonic() - started < 3
    assert body["checks"]["broker"] is False


def test_a_slow_vector_store_holds_readiness_no_longer_than_its_probe_timeout(
    staff_client, settings, use_pinecone
):
    settings.HEALTH_PROBE_TIMEOUT_SECONDS = 0.5
    settings.HEALTH_CACHE_SECONDS = 0
    use_pinecone.delay_next(100, 30, path_contains="describe_index_stats")
    started = time.monotonic()
    first = staff_client.get(READY)
    assert time.monotonic() - started < 5
    assert first.status_code == 503
    assert "no answer within 0.5 s" in first.json()["vector_store"]["error"]
    # The first probe is still waiting on Pinecone: the next call does not start another.
    second = staff_client.get(READY).json()["vector_store"]
    assert second["ok"] is False
    assert "still waiting" in second["error"]


# --- Who sees the details ------------------------------------------------------------


def test_the_health_token_unlocks_the_details(client, settings):
    settings.HEALTH_TOKEN = TOKEN
    body = client.get(READY, headers={"X-Health-Token": TOKEN}).json()
    assert body["database"]["ok"] is True
    assert body["vector_store"]["count"] == 0
    assert client.get(HEALTH, headers={"X-Health-Token": TOKEN}).json()["database"]["ok"]


def test_a_wrong_health_token_is_refused(client, settings):
    settings.HEALTH_TOKEN = TOKEN
    response = client.get(READY, headers={"X-Health-Token": "x" * 32})
    assert response.status_code == 403
    assert response.json()["error"] == "bad_health_token"


def test_a_health_token_is_refused_when_none_is_configured(client, settings):
    settings.HEALTH_TOKEN = ""
    response = client.get(HEALTH, headers={"X-Health-Token": TOKEN})
    assert response.status_code == 403
    assert response.json()["error"] == "bad_health_token"


def test_an_empty_health_token_header_is_no_token(client, settings):
    settings.HEALTH_TOKEN = ""
    response = client.get(HEALTH, headers={"X-Health-Token": ""})
    assert response.status_code == 200
    assert "database" not in response.json()


def test_wrong_health_tokens_are_throttled_per_client_address(client, settings):
    settings.HEALTH_TOKEN = TOKEN
    settings.HEALTH_TOKEN_TRIES_PER_MINUTE = 3
    guesser = {"REMOTE_ADDR": "203.0.113.9"}
    for _ in range(3):
        assert client.get(READY, headers={"X-Health-Token": "guess"}, **guesser).status_code == 403
    throttled = client.get(HEALTH, headers={"X-Health-Token": "guess"}, **guesser)
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "throttled"
    assert int(throttled["Retry-After"]) >= 1
    # Not even the right token is checked from that address now: guessing gains nothing.
    assert client.get(READY, headers={"X-Health-Token": TOKEN}, **guesser).status_code == 429
    # Without a token it still gets the shallow status; other addresses are unaffected.
    assert client.get(READY, **guesser).status_code == 200
    other = {"REMOTE_ADDR": "198.51.100.4"}
    assert client.get(READY, headers={"X-Health-Token": TOKEN}, **other).json()["database"]["ok"]


def test_a_right_health_token_is_never_counted_as_a_wrong_one(client, settings):
    settings.HEALTH_TOKEN = TOKEN
    settings.HEALTH_TOKEN_TRIES_PER_MINUTE = 1
    for _ in range(3):
        assert client.get(READY, headers={"X-Health-Token": TOKEN}).status_code == 200


@pytest.mark.parametrize("token", ["short", "x" * 31])
def test_a_health_token_under_32_characters_is_refused_at_startup(tmp_path, token):
    done = run_python("import django; django.setup()", project_env(tmp_path, HEALTH_TOKEN=token))
    assert done.returncode != 0
    assert "HEALTH_TOKEN must be at least 32 characters" in done.stderr
    assert "secrets.token_urlsafe(32)" in done.stderr


def test_a_health_token_of_32_characters_is_accepted(tmp_path):
    done = run_python("import django; django.setup()", project_env(tmp_path, HEALTH_TOKEN=TOKEN))
    assert done.returncode == 0, done.stderr


# --- Beat -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the probe reads the database on its own thread
def test_a_late_periodic_task_shows_in_readiness_without_failing_it(
    staff_client, settings, monkeypatch
):
    from catalog.models import PeriodicTaskRun
    from visualsearch import health

    monkeypatch.setattr(health, "STARTED_AT", timezone.now() - timedelta(hours=1))
    health._shared_report.forget()

    # Half a second: this process has been up (an hour, above) for longer than 3 of them
    # (the grace a fresh deployment gets; tests/catalog/test_periodic.py has the rule).
    settings.CELERY_BEAT_SCHEDULE = {
        "send-unqueued": {"task": "catalog.tasks.send_unqueued", "schedule": 0.5}
    }
    PeriodicTaskRun.objects.create(
        name="catalog.tasks.send_unqueued", last_run_at=timezone.now() - timedelta(seconds=10)
    )
    response = staff_client.get(READY)
    # A late beat does not stop this replica from serving searches: 200, but said loudly.
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["beat"]["ok"] is False
    assert body["beat"]["late"] == ["catalog.tasks.send_unqueued"]
    assert "celery beat" in body["beat"]["error"]
    staff_client.logout()
    assert staff_client.get(READY).json() == {
        "status": "degraded",
        "checks": EVERY_PART_UP | {"beat": False},
    }


@pytest.mark.django_db(transaction=True)
def test_periodic_tasks_on_time_keep_beat_ok(staff_client, settings):
    from catalog.models import PeriodicTaskRun

    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        PeriodicTaskRun.objects.create(name=entry["task"], last_run_at=timezone.now())
    body = staff_client.get(READY).json()
    assert body["beat"]["ok"] is True
    assert body["beat"]["late"] == []
    assert set(body["beat"]["tasks"]) == {
        entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }


# --- The contract --------------------------------------------------------------------


def test_the_schema_describes_liveness_readiness_and_their_refusals(client, staff_client):
    from tests.test_api_schema import assert_matches, codes_in

    schema = client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert {LIVE, READY, HEALTH} <= set(paths)
    for path in (READY, HEALTH):
        assert {(403, "bad_health_token"), (429, "throttled")} <= codes_in(paths[path]["get"])
    assert codes_in(paths[LIVE]["get"]) == set()
    assert_matches(schema, "HealthLive", client.get(LIVE).json())
    assert_matches(schema, "HealthDetails", staff_client.get(READY).json())
    staff_client.logout()
    assert_matches(schema, "HealthSummary", staff_client.get(READY).json())
