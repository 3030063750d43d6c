"""LOG_FORMAT=json (a line per request and per task) and Sentry (SENTRY_DSN)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.project_process import project_env, run_python
from visualsearch.observability import JsonFormatter

REQUEST_LOG = "visualsearch.observability.RequestLogMiddleware"


@pytest.fixture
def json_lines():
    """What the project's JSON log handler writes, one parsed dict per line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda logger: [
        entry
        for entry in map(json.loads, stream.getvalue().splitlines())
        if entry["logger"] == logger
    ]
    root.removeHandler(handler)
    root.setLevel(previous_level)


def test_a_log_record_becomes_one_json_line_with_its_extras_and_traceback(json_lines):
    try:
        raise ValueError("truncated JPEG")
    except ValueError:
        logging.getLogger("catalog").exception("image %s failed", 7, extra={"image_id": 7})
    [entry] = json_lines("catalog")  # the traceback's lines stayed inside the one JSON line
    assert entry["level"] == "ERROR"
    assert entry["message"] == "image 7 failed"
    assert entry["image_id"] == 7
    assert "ValueError: truncated JPEG" in entry["exc_info"]
    assert entry["time"].endswith("+00:00")


@pytest.mark.django_db
def test_each_request_is_logged_with_its_duration_and_client(client, settings, json_lines):
    settings.MIDDLEWARE = [REQUEST_LOG, *settings.MIDDLEWARE]
    settings.TRUSTED_PROXY_NETWORKS = ["127.0.0.1"]  # the test client's address: the proxy
    client.get("/api/health/", headers={"X-Forwarded-For": "203.0.113.7"})
    client.get("/no-such-page/")
    health, missing = json_lines("visualsearch.request")
    assert health["method"] == "GET"
    assert health["path"] == "/api/health/"
    assert health["status"] == 200
    assert health["duration_ms"] > 0
    assert health["client_ip"] == "203.0.113.7"
    assert health["message"].startswith("GET /api/health/ 200 ")
    assert missing["status"] == 404
    assert missing["client_ip"] == "127.0.0.1"


@pytest.mark.django_db
def test_each_task_is_logged_with_its_state_and_duration(settings, eager_celery, json_lines):
    from catalog.tasks import send_unqueued

    settings.LOG_FORMAT = "json"
    result = send_unqueued.delay()
    [entry] = json_lines("visualsearch.task")
    assert entry["task"] == "catalog.tasks.send_unqueued"
    assert entry["task_id"] == result.id
    assert entry["state"] == "SUCCESS"
    assert entry["duration_ms"] >= 0


@pytest.mark.django_db
def test_text_logs_add_no_task_lines(settings, eager_celery, json_lines):
    from catalog.tasks import send_unqueued

    settings.LOG_FORMAT = "text"
    send_unqueued.delay()
    assert json_lines("visualsearch.task") == []


def test_log_format_json_writes_only_json_lines(tmp_path):
    """The settings wire it all: the formatter, the middleware, Django's own records."""
    code = """
import django, logging, warnings
django.setup()
from django.test import Client
logging.getLogger("catalog").warning("a warning from the catalog")
warnings.warn("a warning from a library")
Client(HTTP_HOST="localhost").get("/no-such-page/")
"""
    result = run_python(code, project_env(tmp_path, LOG_FORMAT="json"))
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    by_logger = {entry["logger"]: entry for entry in entries}
    assert by_logger["catalog"]["message"] == "a warning from the catalog"
    assert by_logger["visualsearch.request"]["status"] == 404
    assert by_logger["django.request"]["level"] == "WARNING"
    assert "a warning from a library" in by_logger["py.warnings"]["message"]


class FakeSentry(ThreadingHTTPServer):
    """Records what the Sentry SDK posts, as an ingest server would receive it."""

    def __init__(self):
        self.envelopes: list[tuple[str, bytes]] = []
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            encoding = self.headers.get("Content-Encoding", "")
            assert encoding in ("", "gzip"), f"unexpected Content-Encoding {encoding}"
            if encoding == "gzip":
                body = gzip.decompress(body)
            self.server.envelopes.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass


@pytest.fixture
def sentry_server():
    server = FakeSentry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_unhandled_errors_of_views_and_tasks_reach_sentry(tmp_path, sentry_server):
    # A new process, so the SDK does not stay initialised in this one.
    code = """
import sys, types, django
django.setup()
import sentry_sdk
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path
from visualsearch.celery import app

def broken_view(request):
    raise RuntimeError("unhandled in a view")

@app.task(name="tests.broken_task")
def broken_task():
    raise RuntimeError("unhandled in a task")

urls = types.ModuleType("broken_urls")
urls.urlpatterns = [path("broken/", broken_view)]
sys.modules["broken_urls"] = urls
with override_settings(ROOT_URLCONF="broken_urls"):
    client = Client(HTTP_HOST="localhost", raise_request_exception=False)
    print(client.get("/broken/").status_code)
app.conf.task_always_eager = True
try:
    broken_task.delay()
except RuntimeError:
    pass
print(" ".join(sorted(sentry_sdk.get_client().integrations)))
sentry_sdk.flush(timeout=10)
"""
    dsn = f"http://publickey@127.0.0.1:{sentry_server.server_address[1]}/1"
    result = run_python(code, project_env(tmp_path, SENTRY_DSN=dsn))
    assert result.returncode == 0, result.stderr
    status, integrations = result.stdout.splitlines()
    assert status == "500"
    assert {"django", "celery"} <= set(integrations.split())
    assert {path for path, _ in sentry_server.envelopes} == {"/api/1/envelope/"}
    events = b"".join(body for _, body in sentry_server.envelopes)
    assert b"unhandled in a view" in events
    assert b"unhandled in a task" in events


def test_without_a_dsn_sentry_stays_off(tmp_path):
    code = "import django, sentry_sdk; django.setup(); print(sentry_sdk.get_client().is_active())"
    result = run_python(code, project_env(tmp_path))
    assert result.stdout.strip() == "False", result.stderr
